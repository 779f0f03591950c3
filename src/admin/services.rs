//! The operator-facing services of a running interface, each on a thread of its own (never a
//! dataplane thread):
//!
//! - `veil-uapi`: the `wg` tool's protocol on `/var/run/wireguard/IFACE.sock` ([`uapi`]);
//! - `veil-ctl`: `veil show` / `veil health` on `/run/veil/IFACE/ctl.sock` ([`ctl`]);
//! - `veil-metrics`: `GET /metrics` and `GET /healthz` on `--metrics-listen` ([`http`]), each
//!   connection on a short-lived `veil-http` thread ([`http::Connections`]).
//!
//! They reach the peer table only through the admin channel into the control thread, and read
//! counters and heartbeats from [`Shared`]. Sockets are mode 0600 and removed when the
//! [`Services`] are dropped.
//!
//! The runtime wires them in three steps: [`wire`] before the dataplane threads start (it makes
//! the admin channel and the histograms, whose control ends go to the control-thread shell),
//! [`Wiring::bind`] (the unix sockets, before veil gives up root) and [`Bound::start`] (the
//! threads, after).

use std::fmt;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use log::{info, warn};
use veil_control::device::{admin_channel, AdminInbox, ControlCounters};
use veil_dataplane::pipeline::{Shared, TxThread};
use veil_dataplane::route::IpNet;
use veil_dataplane::sampler::BoundsError;
use veil_dataplane::sys;

use super::context::Context;
use super::ctl::ctl_socket;
use super::metrics::{self, HandshakeRecorders, MetricsHub, DEFAULT_PEER_SERIES};
use super::{ctl, health, http, uapi};
use crate::cli::{Threading, UpArgs};
use veil_dataplane::io::UdpSlot;

/// Read/write timeout of a client connection on a unix socket.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a service thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(500);

/// A flag or variable for the services is refused.
#[derive(Debug)]
pub enum ServiceOptionsError {
    /// The metrics address cannot be bound.
    MetricsBind {
        /// `--metrics-listen` or `[metrics] listen`.
        origin: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A test-hook variable names no thread.
    #[cfg(debug_assertions)]
    TestHooks(crate::test_hooks::HookError),
}

impl fmt::Display for ServiceOptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceOptionsError::MetricsBind {
                origin,
                addr,
                source,
            } => write!(f, "{origin} {addr}: cannot bind: {source}"),
            #[cfg(debug_assertions)]
            ServiceOptionsError::TestHooks(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ServiceOptionsError {}

/// The histograms could not be made.
#[derive(Debug)]
pub struct WireError(pub BoundsError);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "metrics: {}", self.0)
    }
}

impl std::error::Error for WireError {}

/// A thread could not be started.
#[derive(Debug)]
pub struct SpawnError {
    /// Its name.
    pub thread: String,
    /// Why.
    pub source: io::Error,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot start thread {}: {}", self.thread, self.source)
    }
}

impl std::error::Error for SpawnError {}

/// What `veil up` flags say about the services.
#[derive(Debug)]
pub struct ServiceOptions {
    /// `--metrics-listen`, bound already so a bad address fails before anything is created.
    pub metrics_listen: Option<(SocketAddr, TcpListener)>,
    /// `--metrics-peers`.
    pub metrics_peers: usize,
    /// Test-only stall and panic hooks, from the environment.
    #[cfg(debug_assertions)]
    pub test_hooks: crate::test_hooks::TestHooks,
}

impl ServiceOptions {
    /// From the flags and the environment; binds the metrics address.
    /// `file` is the config's `[metrics]` section; `--metrics-listen` overrides it.
    pub fn from_args(
        args: &UpArgs,
        file: &crate::config::MetricsConfig,
    ) -> Result<Self, ServiceOptionsError> {
        let (listen, origin) = match args.metrics_listen {
            Some(addr) => (Some(addr), "--metrics-listen"),
            None => (file.enable.then_some(file.listen), "[metrics] listen"),
        };
        let metrics_listen = match listen {
            None => None,
            // The running veil's listener comes with the hand-off (ServiceOptions::adopt_metrics).
            Some(_) if args.take_over => None,
            Some(addr) => Some((
                addr,
                TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| ServiceOptionsError::MetricsBind {
                        origin,
                        addr,
                        source,
                    })?,
            )),
        };
        Ok(Self {
            metrics_listen,
            metrics_peers: args.metrics_peers.unwrap_or(DEFAULT_PEER_SERIES),
            #[cfg(debug_assertions)]
            test_hooks: crate::test_hooks::TestHooks::from_env()
                .map_err(ServiceOptionsError::TestHooks)?,
        })
    }
}

impl ServiceOptions {
    /// Serve metrics on the listener a live hand-off passed over.
    pub fn adopt_metrics(&mut self, fd: std::os::fd::OwnedFd) -> io::Result<()> {
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true)?;
        self.metrics_listen = Some((listener.local_addr()?, listener));
        Ok(())
    }

    /// A duplicate of the metrics listener, to pass over in a live hand-off.
    pub fn metrics_fd(&self) -> Option<std::os::fd::OwnedFd> {
        let (_, l) = self.metrics_listen.as_ref()?;
        l.try_clone().ok().map(std::os::fd::OwnedFd::from)
    }
}

/// Step one, before the dataplane threads start.
#[derive(Debug)]
pub struct Wiring {
    ctx: Arc<Context>,
    options: ServiceOptions,
}

/// What the control-thread shell serves and records into.
#[derive(Debug)]
pub struct ControlEnds {
    /// The control thread's end of the admin channel.
    pub admin: AdminInbox,
    /// Handshake timing.
    pub recorders: HandshakeRecorders,
}

/// Every pipeline of the interface, as the services see them.
#[derive(Debug)]
pub struct Pipelines {
    /// The first pipeline's shared state and socket (its control doorbell serves them all).
    pub first: (Arc<Shared>, Arc<UdpSlot>),
    /// Every pipeline's shared state, the first included.
    pub shared: Vec<Arc<Shared>>,
    /// Every pipeline's socket, the first included.
    pub udps: Vec<Arc<UdpSlot>>,
    /// Each pipeline's CPUs, one line each.
    pub layout: Vec<String>,
}

/// Make the admin channel and the histograms, and attach the TX histograms to `tx`; returns
/// the wiring and the control thread's ends.
#[allow(clippy::too_many_arguments)]
pub fn wire(
    options: ServiceOptions,
    name: &str,
    all: Pipelines,
    threading: Threading,
    tun_ifindex: u32,
    addresses: &[IpNet],
    control_counters: &Arc<ControlCounters>,
    txs: &mut [&mut TxThread],
) -> Result<(Wiring, ControlEnds), WireError> {
    let (shared, udp) = (&all.first.0, &all.first.1);
    let s = shared.clone();
    // In single mode the one thread sleeps in poll(2) on RX's eventfd.
    let (admin, inbox) = admin_channel(move || match threading {
        Threading::Pipeline => s.control_bell.wake_now(),
        Threading::Single => s.rx_bell.wake_now(),
    });
    let admin = admin.counting(control_counters.clone());
    let (hub, tx_samples, recorders) =
        MetricsHub::new(options.metrics_peers, txs.len()).map_err(WireError)?;
    for (tx, samples) in txs.iter_mut().zip(tx_samples) {
        tx.record_samples(samples);
    }
    let ctx = Arc::new(Context {
        name: name.to_string(),
        admin,
        shared: shared.clone(),
        pipelines: all.shared,
        control_counters: control_counters.clone(),
        udp: udp.clone(),
        udps: all.udps,
        layout: all.layout,
        tun_ifindex,
        threading,
        hub,
        own_networks: addresses.iter().map(IpNet::network).collect(),
        handoffs: Default::default(),
        #[cfg(debug_assertions)]
        test_hooks: options.test_hooks,
    });
    Ok((
        Wiring { ctx, options },
        ControlEnds {
            admin: inbox,
            recorders,
        },
    ))
}

/// The running services; dropping them stops their threads and removes their sockets.
#[derive(Debug)]
pub struct Services {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    sockets: Vec<PathBuf>,
}

impl Wiring {
    /// Step two: bind the unix sockets (while veil may still create files where they live,
    /// before it gives up root). A UAPI or control socket that cannot be made is a warning:
    /// the tunnel works without it.
    pub fn bind(self) -> Bound {
        let name = self.ctx.name.clone();
        let uapi_path = Path::new(uapi::SOCKET_DIR).join(format!("{name}.sock"));
        Bound {
            uapi: bind_or_warn(&name, "UAPI socket", uapi_path),
            ctl: bind_or_warn(&name, "control socket", ctl_socket(&name)),
            ctx: self.ctx,
            options: self.options,
        }
    }
}

impl Wiring {
    /// Step two for a live hand-off: the listeners the running veil passed over, at the
    /// paths it served them on (nothing is bound or made).
    pub fn adopt(
        self,
        uapi: Option<std::os::fd::OwnedFd>,
        ctl: Option<std::os::fd::OwnedFd>,
    ) -> io::Result<Bound> {
        let name = self.ctx.name.clone();
        let adopt = |fd: Option<std::os::fd::OwnedFd>, path: PathBuf| {
            fd.map(|fd| {
                let l = UnixListener::from(fd);
                l.set_nonblocking(true).map(|()| (path, l))
            })
            .transpose()
        };
        Ok(Bound {
            uapi: adopt(
                uapi,
                Path::new(uapi::SOCKET_DIR).join(format!("{name}.sock")),
            )?,
            ctl: adopt(ctl, ctl_socket(&name))?,
            ctx: self.ctx,
            options: self.options,
        })
    }
}

/// The services with every socket bound, not yet served.
#[derive(Debug)]
pub struct Bound {
    ctx: Arc<Context>,
    options: ServiceOptions,
    uapi: Option<(PathBuf, UnixListener)>,
    ctl: Option<(PathBuf, UnixListener)>,
}

impl Bound {
    /// The running interface's context, for what the runtime itself asks of it (SaveConfig).
    pub fn context(&self) -> Arc<Context> {
        self.ctx.clone()
    }

    /// Duplicates of the UAPI and control listeners and of the metrics listener, to pass
    /// over in a live hand-off.
    pub fn listener_fds(&self) -> [Option<std::os::fd::OwnedFd>; 3] {
        let dup = |b: &Option<(PathBuf, UnixListener)>| {
            b.as_ref()
                .and_then(|(_, l)| l.try_clone().ok())
                .map(std::os::fd::OwnedFd::from)
        };
        [dup(&self.uapi), dup(&self.ctl), self.options.metrics_fd()]
    }

    /// The socket files made, to be removed at the end.
    pub fn socket_paths(&self) -> Vec<PathBuf> {
        [&self.uapi, &self.ctl]
            .into_iter()
            .flatten()
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Step three: start the threads.
    pub fn start(self) -> Result<Services, SpawnError> {
        let mut services = Services {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            sockets: Vec::new(),
        };
        let name = self.ctx.name.clone();
        if let Some((addr, listener)) = self.options.metrics_listen {
            let ctx = self.ctx.clone();
            let handler = Arc::new(move |path: &str| answer_http(&ctx, path));
            let connections = http::Connections::new(http::MAX_CONNECTIONS);
            services.spawn("veil-metrics", listener, move |stream| {
                if let Err(e) = connections.serve(stream, handler.clone()) {
                    warn!("metrics {addr}: connection dropped: {e}");
                }
            })?;
            info!("{name}: metrics on http://{addr}/metrics");
        }
        if let Some(bound) = self.uapi {
            let ctx = self.ctx.clone();
            services.serve_unix("veil-uapi", bound, move |s| {
                uapi::serve_connection(s, &*ctx)
            })?;
        }
        if let Some(bound) = self.ctl {
            let ctx = self.ctx.clone();
            services.serve_unix("veil-ctl", bound, move |s| ctl::serve_connection(&ctx, s))?;
        }
        Ok(services)
    }
}

/// [`bind_unix`], or a warning naming `what` (the tunnel works without it).
fn bind_or_warn(name: &str, what: &str, path: PathBuf) -> Option<(PathBuf, UnixListener)> {
    match bind_unix(&path) {
        Ok(l) => Some((path, l)),
        Err(e) => {
            warn!("{name}: no {what} ({}): {e}", path.display());
            None
        }
    }
}

/// The answer to `GET path` on the metrics endpoint.
fn answer_http(ctx: &Context, path: &str) -> http::Response {
    match path {
        "/metrics" => http::Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics::render_prometheus(&ctx.metrics_data()),
        },
        "/healthz" => {
            let report = health::check(ctx);
            http::Response {
                status: if report.status() == health::Status::Ok {
                    200
                } else {
                    503
                },
                content_type: "application/json",
                body: report.to_json() + "\n",
            }
        }
        _ => http::Response::text(404, "not found: try /metrics or /healthz\n"),
    }
}

/// Bind a unix stream socket with mode 0600 in a directory made if missing. A stale socket
/// file (nobody listening) is replaced; a live one is an error.
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process is serving this socket",
            ));
        }
        fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// A listener the accept loop can serve.
trait Listener: AsFd + Send + 'static {
    type Stream: Send;
    fn accept_one(&self) -> io::Result<Self::Stream>;
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    fn accept_one(&self) -> io::Result<UnixStream> {
        let (s, _) = self.accept()?;
        s.set_nonblocking(false)?;
        Ok(s)
    }
}

impl Listener for TcpListener {
    type Stream = std::net::TcpStream;
    fn accept_one(&self) -> io::Result<std::net::TcpStream> {
        let (s, _) = self.accept()?;
        s.set_nonblocking(false)?;
        Ok(s)
    }
}

impl Services {
    /// Serve a bound unix socket on thread `thread`, with the client timeouts; the socket
    /// file is removed when the services stop.
    fn serve_unix(
        &mut self,
        thread: &str,
        (path, listener): (PathBuf, UnixListener),
        serve: impl Fn(UnixStream) + Send + 'static,
    ) -> Result<(), SpawnError> {
        self.sockets.push(path);
        self.spawn(thread, listener, move |stream: UnixStream| {
            let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
            let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
            serve(stream);
        })
    }

    fn spawn<L: Listener>(
        &mut self,
        name: &str,
        listener: L,
        serve: impl Fn(L::Stream) + Send + 'static,
    ) -> Result<(), SpawnError> {
        let stop = self.stop.clone();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let ready = sys::wait_readable(&[listener.as_fd()], Some(POLL));
                    if !matches!(ready, Ok(m) if m.is_readable(0)) {
                        continue;
                    }
                    match listener.accept_one() {
                        Ok(stream) => serve(stream),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            warn!("accept: {e}");
                            std::thread::sleep(POLL);
                        }
                    }
                }
            })
            .map_err(|source| SpawnError {
                thread: name.to_string(),
                source,
            })?;
        self.threads.push(handle);
        Ok(())
    }

    /// Remove the sockets and tell the threads to stop (also done on drop). Threads that are
    /// idle are joined; one still busy with a slow client is left to end with the process
    /// rather than hold up the shutdown for its client timeout.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for p in self.sockets.drain(..) {
            let _ = fs::remove_file(&p);
        }
        // An idle thread sees the flag within one poll period.
        let deadline = std::time::Instant::now() + POLL + POLL;
        while self.threads.iter().any(|t| !t.is_finished()) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl Services {
    /// A live hand-off completed: stop serving, and leave the socket files, which the new
    /// process serves now (on the same listeners).
    pub fn release(mut self) {
        self.sockets.clear();
        self.stop();
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop();
    }
}
