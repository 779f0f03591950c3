//! The control thread's shell: what runs around the sans-IO `Device` on the control thread.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use log::info;
use veil_control::device::{AdminInbox, Device};
use veil_dataplane::link::{Command, Event, HandshakeDatagram, PeerId};
use veil_dataplane::pipeline::ControlDriver;
use veil_dataplane::sys;

use crate::admin::metrics::HandshakeRecorders;
use crate::admin::services::ControlEnds;

/// The control thread's driver: the sans-IO [`Device`] and the I/O around it. It serves the
/// admin channel (requests become plain calls on the device), times handshake messages for
/// the metrics, samples the process's load, and notices that a client's own source address
/// towards a gateway changed.
pub(super) struct ControlShell {
    device: Device,
    admin: AdminInbox,
    recorders: HandshakeRecorders,
    sources: HashMap<PeerId, IpAddr>,
    next_check: Option<Instant>,
    load: LoadSampler,
}

/// How often a client checks which source address the kernel uses towards its gateways.
const SOURCE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl ControlShell {
    /// `threads`: how many threads of veil's run (the CPUs it can keep busy).
    pub(super) fn new(device: Device, ends: ControlEnds, threads: usize) -> Self {
        Self {
            device,
            admin: ends.admin,
            recorders: ends.recorders,
            sources: HashMap::new(),
            next_check: None,
            load: LoadSampler::new(threads),
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
    /// Time spent on handshake messages since the last sample: not counted as load.
    excluded: Duration,
}

/// The CPUs veil can keep busy: those it may run on, but no more than it has threads (on a
/// 32-core host four threads can never reach 80 % of the machine). At least one.
fn usable_cpus(available: usize, threads: usize) -> f64 {
    available.min(threads).max(1) as f64
}

/// CPU use in percent of `cpus`: `ticks` of CPU (USER_HZ, 100 a second) in `secs`, less
/// `excluded` seconds of handshake work.
fn busy_pct(ticks: u64, excluded: f64, secs: f64, cpus: f64) -> f64 {
    let busy = (ticks as f64 / 100.0 - excluded).max(0.0);
    busy / secs / cpus * 100.0
}

impl LoadSampler {
    fn new(threads: usize) -> Self {
        let cpus = usable_cpus(sys::available_cpus().len(), threads);
        Self {
            last: None,
            cpus,
            memory_limit: crate::procfs::memory_limit(),
            excluded: Duration::ZERO,
        }
    }

    /// `spent` of the time since the last sample went to handshake messages.
    fn exclude(&mut self, spent: Duration) {
        self.excluded = self.excluded.saturating_add(spent);
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
        let excluded = std::mem::take(&mut self.excluded).as_secs_f64();
        let (t, before) = previous?;
        let secs = now.saturating_duration_since(t).as_secs_f64().max(1e-3);
        // USER_HZ is 100 on every Linux architecture veil builds for.
        let cpu_pct = busy_pct(ticks.saturating_sub(before), excluded, secs, self.cpus);
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
        // Reading the clock twice per handshake message is nothing next to the
        // Diffie-Hellman work in it.
        let received = msg.received;
        let work = self.device.handshake_work_done();
        let start = Instant::now();
        self.device.on_handshake(msg, now);
        let end = Instant::now();
        self.recorders.record(start, end, received);
        let spent = end.saturating_duration_since(start);
        // The handshake work is the control thread's, bounded by its budget: the load level
        // counts what is left (the dataplane's), so a flood alone cannot raise it.
        self.load.exclude(spent);
        if self.device.handshake_work_done() != work {
            self.device.charge_handshake_work(spent);
        }
    }
    fn on_event(&mut self, ev: Event, now: Instant) {
        self.device.on_event(ev, now);
    }
    fn on_timeout(&mut self, now: Instant) {
        self.check_sources(now);
        self.device
            .observe_wall_clock(now, std::time::SystemTime::now());
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
        while let Some(round) = self.device.poll_handshake_round() {
            self.recorders.record_round(round);
        }
        self.recorders.flush_if_due(now);
        let device = &mut self.device;
        self.admin
            .serve(|request| device.handle_admin(request, now));
    }
    fn begin_drain(&mut self, now: Instant) {
        self.device.begin_drain(now);
    }
    fn drained(&self) -> bool {
        self.device.drained()
    }
    fn set_dataplane_quiet(&mut self, quiet: bool, now: Instant) {
        self.device.set_dataplane_quiet(quiet, now);
    }
    fn set_handshake_backlog(&mut self, queued: usize, now: Instant) {
        self.device.set_handshake_backlog(queued, now);
    }
}

#[cfg(test)]
mod tests {
    use super::{busy_pct, usable_cpus};

    #[test]
    fn handshake_work_is_not_load() {
        // 1.5 CPU-seconds in a second on 2 CPUs is 75 %; half a second of it handshakes: 50 %.
        assert_eq!(busy_pct(150, 0.0, 1.0, 2.0), 75.0);
        assert_eq!(busy_pct(150, 0.5, 1.0, 2.0), 50.0);
        // More excluded than measured (ticks are coarse): never below zero.
        assert_eq!(busy_pct(10, 0.5, 1.0, 2.0), 0.0);
    }

    #[test]
    fn cpu_use_is_measured_against_the_cpus_veils_threads_can_use() {
        assert_eq!(usable_cpus(32, 4), 4.0, "pipeline on a big host");
        assert_eq!(usable_cpus(2, 4), 2.0, "pipeline on a small host");
        assert_eq!(usable_cpus(16, 1), 1.0, "single-threaded");
        assert_eq!(usable_cpus(0, 4), 1.0, "affinity unknown");
    }
}
