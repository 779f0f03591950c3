//! What every operator service shares: the [`Context`] of the running interface, and the
//! UAPI [`Backend`] on top of it. It imports nothing above it in `admin/` (the servers use it,
//! never the other way round).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use log::{info, warn};
use veil_control::device::{
    AdminError, AdminHandle, ChangeOutcome, ConfigureError, ControlCounters,
};
use veil_dataplane::pipeline::Shared;
use veil_dataplane::role::Role;
use veil_dataplane::route::IpNet;
use veil_dataplane::sys::Netlink;

use super::metrics::{self, CounterSets, MetricsData, MetricsHub};
use super::uapi::{Backend, InterfaceState, SetRequest, UapiError};
use crate::cli::Threading;
use veil_dataplane::io::UdpSlot;

/// How long a service waits for the control thread.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every service needs to read or change the running interface.
#[derive(Debug)]
pub struct Context {
    /// Interface name.
    pub name: String,
    /// Into the control thread.
    pub admin: AdminHandle,
    /// Counters, heartbeats, doorbells (the first pipeline's).
    pub shared: Arc<Shared>,
    /// Every pipeline's, the first included.
    pub pipelines: Vec<Arc<Shared>>,
    /// The control thread's counters.
    pub control_counters: Arc<ControlCounters>,
    /// The outer socket (the first pipeline's).
    pub udp: Arc<UdpSlot>,
    /// Every pipeline's outer socket, on one port.
    pub udps: Vec<Arc<UdpSlot>>,
    /// The TUN device's index.
    pub tun_ifindex: u32,
    /// Threading mode.
    pub threading: Threading,
    /// Histograms.
    pub hub: Arc<MetricsHub>,
    /// Each pipeline's CPUs, one line each (`threading::Layout::describe`).
    pub layout: Vec<String>,
    /// Networks of the interface's own addresses: their routes are the kernel's, never removed.
    pub own_networks: Vec<IpNet>,
    /// Live hand-offs this process took part in.
    pub handoffs: HandoffStats,
    /// Test-only stall and panic hooks.
    #[cfg(debug_assertions)]
    pub test_hooks: crate::test_hooks::TestHooks,
}

/// Live hand-offs (issue 15) this process took part in, for `/metrics` and `veil show`.
#[derive(Debug, Default)]
pub struct HandoffStats {
    /// Take-overs that completed into this process (it started with one, or not).
    pub completed: std::sync::atomic::AtomicU64,
    /// Take-overs of this process that failed and were rolled back.
    pub rolled_back: std::sync::atomic::AtomicU64,
    /// How long the last one kept traffic waiting, in microseconds (0: none yet).
    pub last_pause_us: std::sync::atomic::AtomicU64,
}

impl HandoffStats {
    /// (completed, rolled back, last pause in seconds).
    pub fn read(&self) -> (u64, u64, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.completed.load(Relaxed),
            self.rolled_back.load(Relaxed),
            self.last_pause_us.load(Relaxed) as f64 / 1e6,
        )
    }

    /// Record one hand-off that paused traffic for `pause`.
    pub fn record(&self, completed: bool, pause: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = if completed {
            &self.completed
        } else {
            &self.rolled_back
        };
        n.fetch_add(1, Relaxed);
        self.last_pause_us.store(
            u64::try_from(pause.as_micros()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }
}

/// The dataplane's counter sets, each summed over every pipeline (the names of one).
pub fn dataplane_totals(pipelines: &[Arc<Shared>]) -> CounterSets {
    let mut totals: CounterSets = Vec::new();
    for sets in pipelines.iter().map(|s| pipeline_counters(s)) {
        if totals.is_empty() {
            totals = sets;
            continue;
        }
        for ((_, total), (_, set)) in totals.iter_mut().zip(sets) {
            for ((_, t), (_, v)) in total.iter_mut().zip(set) {
                *t = t.wrapping_add(v);
            }
        }
    }
    totals
}

/// One pipeline's counter sets: ("rx", …), ("crypto", …), ("tx", …).
pub fn pipeline_counters(s: &Shared) -> CounterSets {
    vec![
        ("rx", s.rx.snapshot()),
        ("crypto", s.crypto.snapshot()),
        ("tx", s.tx.snapshot()),
    ]
}

impl Context {
    /// Age of the heartbeat of `role`'s thread (of the first pipeline).
    pub fn heartbeat_age(&self, role: Role) -> Option<Duration> {
        heartbeat_age(&self.shared, role)
    }

    /// Every dataplane thread but control's, of every pipeline: its name (`veil-rx`, and
    /// `veil-rx1` for pipeline 1) and the age of its heartbeat.
    pub fn dataplane_heartbeats(&self) -> Vec<(String, Option<Duration>)> {
        self.pipelines
            .iter()
            .enumerate()
            .flat_map(|(k, s)| {
                self.dataplane_threads()
                    .map(move |r| (pipeline_thread(r, k), heartbeat_age(s, r)))
            })
            .collect()
    }

    /// The threads that run, in heartbeat-slot order.
    pub fn threads(&self) -> &'static [Role] {
        Role::threads(self.threading == Threading::Single)
    }

    /// The threads that run, but the control thread (the single thread included).
    pub fn dataplane_threads(&self) -> impl Iterator<Item = Role> {
        self.threads()
            .iter()
            .copied()
            .filter(|r| *r != Role::Control)
    }

    /// Gather everything for a scrape or `veil show`.
    pub fn metrics_data(&self) -> MetricsData {
        let control = self.threads().contains(&Role::Control).then(|| {
            (
                Role::Control.thread_name().to_string(),
                self.heartbeat_age(Role::Control).map(|d| d.as_secs_f64()),
            )
        });
        let mut heartbeats: Vec<(String, Option<f64>)> = self
            .dataplane_heartbeats()
            .into_iter()
            .map(|(name, age)| (name, age.map(|d| d.as_secs_f64())))
            .collect();
        heartbeats.extend(control);
        let mut counters = dataplane_totals(&self.pipelines);
        counters.push(("control", self.control_counters.snapshot()));
        MetricsData {
            interface: self.name.clone(),
            listen_port: self.udp.port(),
            aead: veil_dataplane::crypto::Backend::current().name(),
            counters,
            per_pipeline: if self.pipelines.len() > 1 {
                self.pipelines
                    .iter()
                    .map(|s| pipeline_counters(s))
                    .collect()
            } else {
                Vec::new()
            },
            layout: self.layout.clone(),
            device: self
                .admin
                .snapshot(false, SystemTime::now(), ADMIN_TIMEOUT)
                .ok(),
            histograms: self.hub.histograms(),
            rss_bytes: crate::procfs::rss_bytes(),
            heartbeats,
            start_time: metrics::unix_seconds(self.hub.started),
            peer_series: self.hub.peer_series,
            handoffs: self.handoffs.read(),
        }
    }

    /// Move the outer socket (every pipeline's) to `port` and wake RX so it polls the new
    /// one.
    pub fn rebind(&self, port: u16) -> Result<u16, UapiError> {
        match veil_dataplane::io::rebind_pipelines(&self.udps, port) {
            Ok(bound) => {
                for s in &self.pipelines {
                    s.rx_bell.wake_now();
                }
                info!("{}: listening on UDP port {bound}", self.name);
                Ok(bound)
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(UapiError::PortInUse(port)),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && port < 1024 => {
                Err(UapiError::Io(format!(
                    "cannot bind UDP port {port}: {e}: ports below 1024 need CAP_NET_BIND_SERVICE, which veil gave up after start-up (set ListenPort in the config, or run with --user root)"
                )))
            }
            Err(e) => Err(UapiError::Io(format!("cannot bind UDP port {port}: {e}"))),
        }
    }

    /// Add and remove the kernel routes a change implies, as `veil up` does for the config's
    /// peers (never a /0, never the interface's own networks).
    pub fn apply_routes(&self, outcome: &ChangeOutcome) {
        if outcome.routes_added.is_empty() && outcome.routes_removed.is_empty() {
            return;
        }
        let nl = match Netlink::new() {
            Ok(nl) => nl,
            Err(e) => {
                warn!("{}: netlink: {e}; routes not changed", self.name);
                return;
            }
        };
        for n in &outcome.routes_added {
            if n.prefix == 0 {
                warn!(
                    "AllowedIPs {n}: veil does not install default routes (it would capture the tunnel's own traffic); add a route yourself"
                );
                continue;
            }
            if let Err(e) = nl.add_route(self.tun_ifindex, n.addr, n.prefix) {
                warn!("{}: add route {n}: {e}", self.name);
            }
        }
        for n in &outcome.routes_removed {
            if n.prefix == 0 || self.own_networks.contains(n) {
                continue;
            }
            match nl.delete_route(self.tun_ifindex, n.addr, n.prefix) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => warn!("{}: delete route {n}: {e}", self.name),
            }
        }
    }
}

/// Age of the heartbeat of `role`'s thread in the pipeline of `s`.
fn heartbeat_age(s: &Shared, role: Role) -> Option<Duration> {
    let beat = s.heartbeats.get(role.slot())?.load(Ordering::Relaxed);
    Some(s.epoch.instant(beat)?.elapsed())
}

/// The name of `role`'s thread in pipeline `k` (`veil-rx`, `veil-rx1`, …).
pub fn pipeline_thread(role: Role, k: usize) -> String {
    match k {
        0 => role.thread_name().to_string(),
        _ => format!("{}{k}", role.thread_name()),
    }
}

fn admin_error(e: AdminError) -> UapiError {
    match e {
        AdminError::Busy => UapiError::Busy,
        AdminError::Timeout => UapiError::TimedOut,
        AdminError::Closed | AdminError::Mismatch => UapiError::Io(e.to_string()),
    }
}

impl Backend for Context {
    fn get(&self) -> Result<InterfaceState, UapiError> {
        let device = self
            .admin
            .snapshot(true, SystemTime::now(), ADMIN_TIMEOUT)
            .map_err(admin_error)?;
        Ok(InterfaceState {
            listen_port: self.udp.port(),
            fwmark: self.udp.mark(),
            device,
        })
    }

    fn set(&self, request: SetRequest) -> Result<(), UapiError> {
        if let Some(port) = request.listen_port {
            self.rebind(port)?;
        }
        if let Some(mark) = request.fwmark {
            for udp in &self.udps {
                udp.set_mark(mark)
                    .map_err(|e| UapiError::Io(format!("cannot set fwmark {mark}: {e}")))?;
            }
        }
        if !request.changes_device() {
            return Ok(());
        }
        let outcome = self
            .admin
            .configure(request.change, ADMIN_TIMEOUT)
            .map_err(admin_error)?
            .map_err(|e| match e {
                ConfigureError::ZeroPrivateKey => UapiError::Invalid {
                    key: "private_key".into(),
                    reason: "the all-zero key cannot be used",
                },
                ConfigureError::OwnKey => UapiError::Invalid {
                    key: "public_key".into(),
                    reason: "the interface's own public key",
                },
                ConfigureError::WeakKey => UapiError::Invalid {
                    key: "public_key".into(),
                    reason: "a low-order point",
                },
            })?;
        self.apply_routes(&outcome);
        Ok(())
    }
}
