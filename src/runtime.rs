//! `veil up`: bring the interface up, start the threads, stop on a signal.

use std::net::{Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use veil_control::device::{Device, PeerSpec};
use veil_dataplane::link::Epoch;
use veil_dataplane::pipeline::{self, PipelineConfig, Shared, SingleThread, Waiter};
use veil_dataplane::sys::{self, EventFd, Netlink, Tun, UdpSocket};
use veil_dataplane::timing::Timing;

use crate::cli::{Threading, UpArgs};
use crate::config::{interface_name_from_path, Config};
use crate::listen::{UdpHandle, UdpSlot};
use crate::services::ServiceOptions;

/// Exit status for a rejected config or flag: nothing was created.
const EXIT_CONFIG: u8 = 2;
/// Socket buffer size asked for (the kernel may cap it without CAP_NET_ADMIN).
pub(crate) const SOCKET_BUFFER: usize = 8 << 20;
/// Test-only: shorten every protocol timer so rekeys happen within seconds.
const ENV_TEST_REKEY: &str = "VEIL_TEST_REKEY_AFTER_SECS";

/// Which CPU each thread is pinned to (`None`: not pinned).
#[derive(Debug, Clone, Copy, Default)]
struct Pinning {
    rx: Option<usize>,
    crypto: Option<usize>,
    tx: Option<usize>,
    control: Option<usize>,
}

fn pinning(args: &UpArgs) -> Result<Pinning, String> {
    let cpus = sys::available_cpus();
    for (flag, cpu) in [
        ("--rx-cpu", args.rx_cpu),
        ("--crypto-cpu", args.crypto_cpu),
        ("--tx-cpu", args.tx_cpu),
        ("--control-cpu", args.control_cpu),
    ] {
        if let Some(c) = cpu {
            if args.no_pin {
                return Err(format!("{flag} {c} contradicts --no-pin"));
            }
            if !cpus.contains(&c) {
                let list: Vec<String> = cpus.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "{flag} {c}: no such CPU; this process may use CPUs {}",
                    list.join(", ")
                ));
            }
        }
    }
    if args.no_pin || cpus.is_empty() {
        return Ok(Pinning::default());
    }
    let nth = |i: usize| cpus.get(i % cpus.len()).copied();
    Ok(Pinning {
        rx: args.rx_cpu.or(nth(0)),
        crypto: args.crypto_cpu.or(nth(1)),
        tx: args.tx_cpu.or(nth(2)),
        control: args.control_cpu,
    })
}

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

fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}

/// `veil up`.
pub fn up(args: UpArgs) -> ExitCode {
    init_logging();
    match prepare(&args) {
        Ok(prepared) => run(prepared),
        Err(Fail::Config(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

enum Fail {
    Config(String),
}

struct Prepared {
    name: String,
    config: Config,
    pinning: Pinning,
    threading: Threading,
    timing: Timing,
    services: ServiceOptions,
}

fn prepare(args: &UpArgs) -> Result<Prepared, Fail> {
    let config = Config::load(&args.config).map_err(|e| Fail::Config(e.to_string()))?;
    for w in &config.warnings {
        warn!("{w}");
    }
    let name = match &args.interface {
        Some(n) => crate::config::validate_interface_name(n)
            .map_err(|e| Fail::Config(format!("--interface: {e}")))?,
        None => interface_name_from_path(&args.config).map_err(|e| Fail::Config(e.to_string()))?,
    };
    let pinning = pinning(args).map_err(|e| Fail::Config(format!("veil up: {e}")))?;
    let timing = timing_from_env().map_err(Fail::Config)?;
    let services = ServiceOptions::from_args(args).map_err(Fail::Config)?;
    Ok(Prepared {
        name,
        config,
        pinning,
        threading: args.threading,
        timing,
        services,
    })
}

pub(crate) fn bind_udp(port: u16) -> std::io::Result<UdpSocket> {
    match UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), false) {
        Ok(s) => Ok(s),
        // Hosts with IPv6 disabled still get an IPv4 socket.
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port)), false)
        }
        Err(e) => Err(e),
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

fn spawn<F: FnOnce() + Send + 'static>(
    name: &str,
    cpu: Option<usize>,
    body: F,
) -> Result<JoinHandle<()>, String> {
    let thread_name = name.to_string();
    std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            if let Some(cpu) = cpu {
                if let Err(e) = sys::pin_current_thread(cpu) {
                    warn!("{thread_name}: cannot pin to CPU {cpu}: {e}");
                }
            }
            body();
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
    match start(p) {
        Ok(running) => running.wait(&signals),
        Err(msg) => {
            error!("{msg}");
            ExitCode::FAILURE
        }
    }
}

struct Running {
    shared: Arc<Shared>,
    control_counters: Arc<veil_control::device::ControlCounters>,
    threads: Vec<JoinHandle<()>>,
    name: String,
    _services: crate::services::Services,
    // Dropped last: closing the TUN fd removes the interface.
    _tun: Arc<Tun>,
}

fn start(p: Prepared) -> Result<Running, String> {
    let now = Instant::now();
    let epoch = Epoch::new(now);
    let udp = bind_udp(p.config.interface.listen_port.unwrap_or(0)).map_err(|e| {
        format!(
            "cannot bind UDP port {}: {e}",
            p.config.interface.listen_port.unwrap_or(0)
        )
    })?;
    if let Ok((rcv, snd)) = udp.set_buffer_sizes(SOCKET_BUFFER) {
        log::debug!("socket buffers: receive {rcv} bytes, send {snd} bytes");
    }
    let local = udp
        .local_addr()
        .map_err(|e| format!("socket address: {e}"))?;
    let tun =
        Tun::create(&p.name).map_err(|e| format!("cannot create TUN interface {}: {e}", p.name))?;
    configure_interface(&tun, &p.config).map_err(|e| format!("{}: {e}", p.name))?;

    let mut device = Device::new(p.config.interface.private_key.as_bytes(), p.timing, epoch);
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
    let udp = Arc::new(UdpSlot::new(udp).map_err(|e| format!("socket address: {e}"))?);
    let tun = Arc::new(tun);
    let bell = Arc::new(EventFd::new().map_err(|e| format!("eventfd: {e}"))?);
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
    let (services, recorders) = crate::services::wire(
        p.services,
        &p.name,
        &shared,
        p.threading,
        &udp,
        tun.ifindex(),
        &p.config.interface.addresses,
        &mut device,
        &mut tx,
    )?;
    let mut device = crate::metrics::MeteredDevice::new(device, recorders);
    let waiter = IoWaiter {
        udp: udp.handle(),
        tun: tun.clone(),
        bell,
    };
    let mut threads = Vec::new();
    match p.threading {
        Threading::Pipeline => {
            let (u, t, s) = (udp.clone(), tun.clone(), shared.clone());
            threads.push(spawn("veil-rx", p.pinning.rx, move || {
                rx.run(&u.handle(), &*t, &waiter, &s)
            })?);
            let s = shared.clone();
            threads.push(spawn("veil-crypto", p.pinning.crypto, move || {
                crypto.run(&s)
            })?);
            let (u, t, s) = (udp.clone(), tun.clone(), shared.clone());
            threads.push(spawn("veil-tx", p.pinning.tx, move || {
                tx.run(&u.handle(), &*t, &s)
            })?);
            let s = shared.clone();
            threads.push(spawn("veil-control", p.pinning.control, move || {
                control.run(&mut device, &s)
            })?);
        }
        Threading::Single => {
            let single = SingleThread::new((rx, crypto, tx, control));
            let (u, t, s) = (udp.clone(), tun.clone(), shared.clone());
            threads.push(spawn("veil-single", p.pinning.rx, move || {
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
        threads,
        name: p.name,
        _services: services,
        _tun: tun,
    })
}

impl Running {
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

    fn wait(self, signals: &sys::SignalFd) -> ExitCode {
        loop {
            let ready = {
                use std::os::fd::AsFd;
                sys::wait_readable(&[signals.as_fd()], Some(Duration::from_secs(1)))
            };
            match ready.and_then(|_| signals.read()) {
                Ok(Some(sig)) => {
                    info!("{}: {sig:?} received; shutting down", self.name);
                    break;
                }
                Ok(None) => {
                    if self.threads.iter().any(|t| t.is_finished()) {
                        error!(
                            "{}: a dataplane thread stopped unexpectedly; shutting down",
                            self.name
                        );
                        self.shared.shutdown();
                        for t in self.threads {
                            let _ = t.join();
                        }
                        return ExitCode::FAILURE;
                    }
                }
                Err(e) => {
                    error!("signal wait failed: {e}");
                    break;
                }
            }
        }
        self.shared.shutdown();
        self.log_counters_after_join()
    }

    fn log_counters_after_join(mut self) -> ExitCode {
        let mut ok = true;
        for t in std::mem::take(&mut self.threads) {
            ok &= t.join().is_ok();
        }
        self.log_counters();
        info!("{}: stopped; interface removed", self.name);
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}
