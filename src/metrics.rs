//! Metrics: what the threads count, turned into Prometheus text exposition and JSON.
//!
//! Counters come straight from the per-stage counter sets (`Shared::{rx, crypto, tx}` and the
//! control thread's `ControlCounters`); per-peer numbers and active sessions from a snapshot the
//! control thread answers over the admin channel; histograms from [`Recorder`]s on the TX thread
//! (RX→TX latency, batch size) and around the control thread's handshake handling
//! ([`MeteredDevice`]), collected here. Nothing on the per-packet path locks or allocates.
//!
//! Every counter of every set is exported, so a counter added to a stage shows up without a
//! change here: the well-known ones under the names in docs/OPERATIONS.md, every `drop_*`
//! counter as `veil_drops_total{stage,reason}`, and any other as `veil_<stage>_<name>_total`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use veil_control::device::DeviceSnapshot;
use veil_dataplane::link::{Command, Event, HandshakeDatagram};
use veil_dataplane::pipeline::{ControlDriver, TxSamples};
use veil_dataplane::sampler::{histogram_pair, BoundsError, Collector, Recorder};

use crate::keys::encode_key;

/// Per-peer series exported by default: the peers that moved the most bytes.
pub const DEFAULT_PEER_SERIES: usize = 20;
/// How often recording threads hand their histograms over.
const HANDOVER: Duration = Duration::from_secs(1);
/// Histogram range in nanoseconds: 1 ns to 10 s.
const NS_HIGH: u64 = 10_000_000_000;

const LATENCY_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// One histogram ready to print.
#[derive(Debug, Clone)]
pub struct HistogramData {
    /// Metric name without the `veil_` prefix.
    pub name: &'static str,
    /// HELP text.
    pub help: &'static str,
    /// Upper bounds, in the exported unit.
    pub bounds: &'static [f64],
    /// Cumulative count at each bound.
    pub cumulative: Vec<u64>,
    /// Number of observations.
    pub count: u64,
    /// Sum of observations (at the histogram's 1 % resolution).
    pub sum: f64,
    /// 50th, 90th, 99th percentile and maximum, for people.
    pub quantiles: [f64; 4],
}

impl HistogramData {
    fn from_hdr(
        name: &'static str,
        help: &'static str,
        bounds: &'static [f64],
        scale: f64,
        h: &hdrhistogram::Histogram<u64>,
    ) -> Self {
        let mut cumulative = vec![0u64; bounds.len()];
        let mut sum = 0.0;
        for v in h.iter_recorded() {
            let value = h.median_equivalent(v.value_iterated_to()) as f64 / scale;
            let count = v.count_at_value();
            sum += value * count as f64;
            for (c, b) in cumulative.iter_mut().zip(bounds) {
                if value <= *b {
                    *c += count;
                }
            }
        }
        let q = |x: f64| h.value_at_quantile(x) as f64 / scale;
        let count = h.len();
        Self {
            name,
            help,
            bounds,
            cumulative,
            count,
            sum,
            quantiles: if count == 0 {
                [0.0; 4]
            } else {
                [q(0.5), q(0.9), q(0.99), h.max() as f64 / scale]
            },
        }
    }
}

/// The reading side of every histogram, shared by the metrics endpoint and `veil show`.
#[derive(Debug)]
pub struct MetricsHub {
    rx_to_tx: Mutex<Collector>,
    batch_size: Mutex<Collector>,
    handshake_processing: Mutex<Collector>,
    handshake_queue: Mutex<Collector>,
    /// How many peers get per-peer series.
    pub peer_series: usize,
    /// When the process started.
    pub started: SystemTime,
}

/// The control thread's recorders, given to [`MeteredDevice::new`].
#[derive(Debug)]
pub struct HandshakeRecorders {
    processing: Recorder,
    queue: Recorder,
}

impl MetricsHub {
    /// A hub, with the recorders for the TX thread and the control thread.
    pub fn new(
        peer_series: usize,
    ) -> Result<(Arc<Self>, TxSamples, HandshakeRecorders), BoundsError> {
        let ns = || histogram_pair(1, NS_HIGH, HANDOVER);
        let (lat_r, lat_c) = ns()?;
        let (bat_r, bat_c) = histogram_pair(1, 1024, HANDOVER)?;
        let (hp_r, hp_c) = ns()?;
        let (hq_r, hq_c) = ns()?;
        Ok((
            Arc::new(Self {
                rx_to_tx: Mutex::new(lat_c),
                batch_size: Mutex::new(bat_c),
                handshake_processing: Mutex::new(hp_c),
                handshake_queue: Mutex::new(hq_c),
                peer_series,
                started: SystemTime::now(),
            }),
            TxSamples {
                latency_ns: lat_r,
                batch_size: bat_r,
            },
            HandshakeRecorders {
                processing: hp_r,
                queue: hq_r,
            },
        ))
    }

    /// Every histogram as handed over so far.
    pub fn histograms(&self) -> Vec<HistogramData> {
        vec![
            HistogramData::from_hdr(
                "rx_to_tx_latency_seconds",
                "Time from RX reading a batch to TX finishing it (decrypt or encrypt included).",
                LATENCY_BUCKETS,
                1e9,
                self.rx_to_tx.lock().collect(),
            ),
            HistogramData::from_hdr(
                "batch_size_packets",
                "Packets per batch finished by TX.",
                BATCH_BUCKETS,
                1.0,
                self.batch_size.lock().collect(),
            ),
            HistogramData::from_hdr(
                "handshake_processing_seconds",
                "Time the control thread spent on one handshake message.",
                LATENCY_BUCKETS,
                1e9,
                self.handshake_processing.lock().collect(),
            ),
            HistogramData::from_hdr(
                "handshake_queue_seconds",
                "Time a handshake message waited between RX and the control thread.",
                LATENCY_BUCKETS,
                1e9,
                self.handshake_queue.lock().collect(),
            ),
        ]
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The control thread's driver with handshake timing around it. Reading the clock twice per
/// handshake message is nothing next to the Diffie-Hellman work in it.
#[derive(Debug)]
pub struct MeteredDevice<D> {
    inner: D,
    recorders: HandshakeRecorders,
}

impl<D> MeteredDevice<D> {
    /// Wrap `inner`.
    pub fn new(inner: D, recorders: HandshakeRecorders) -> Self {
        Self { inner, recorders }
    }
}

impl<D: ControlDriver> ControlDriver for MeteredDevice<D> {
    fn on_handshake(&mut self, msg: HandshakeDatagram, now: Instant) {
        let received = msg.received;
        let start = Instant::now();
        self.inner.on_handshake(msg, now);
        let end = Instant::now();
        self.recorders
            .processing
            .record(nanos(end.saturating_duration_since(start)));
        if let Some(r) = received {
            self.recorders
                .queue
                .record(nanos(start.saturating_duration_since(r)));
        }
    }

    fn on_event(&mut self, ev: Event, now: Instant) {
        self.inner.on_event(ev, now);
    }

    fn on_timeout(&mut self, now: Instant) {
        self.inner.on_timeout(now);
    }

    fn poll_command(&mut self) -> Option<Command> {
        self.inner.poll_command()
    }

    fn poll_transmit(&mut self) -> Option<HandshakeDatagram> {
        self.inner.poll_transmit()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }

    fn poll_admin(&mut self, now: Instant) {
        self.recorders.processing.flush_if_due(now);
        self.recorders.queue.flush_if_due(now);
        self.inner.poll_admin(now);
    }

    fn set_handshake_backlog(&mut self, queued: usize, now: Instant) {
        self.inner.set_handshake_backlog(queued, now);
    }

    fn begin_drain(&mut self, now: Instant) {
        self.inner.begin_drain(now);
    }

    fn drained(&self) -> bool {
        self.inner.drained()
    }
}

/// Everything one scrape or `veil show` reports, gathered at one moment.
#[derive(Debug, Clone)]
pub struct MetricsData {
    /// Interface name.
    pub interface: String,
    /// UDP port in use.
    pub listen_port: u16,
    /// The transport AEAD backend sealing new sessions (`veil_dataplane::crypto::Backend`).
    pub aead: &'static str,
    /// Counter sets by stage: ("rx", …), ("crypto", …), ("tx", …), ("control", …).
    pub counters: Vec<(&'static str, Vec<(&'static str, u64)>)>,
    /// The control thread's snapshot; `None` if it did not answer.
    pub device: Option<DeviceSnapshot>,
    /// Histograms.
    pub histograms: Vec<HistogramData>,
    /// Resident memory of the process.
    pub rss_bytes: Option<u64>,
    /// Heartbeat age of each thread (`None`: never beat).
    pub heartbeats: Vec<(&'static str, Option<f64>)>,
    /// Process start, seconds since the Unix epoch.
    pub start_time: f64,
    /// Per-peer series limit.
    pub peer_series: usize,
}

/// Resident set size from /proc/self/status (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

struct Family {
    name: String,
    kind: Kind,
    help: String,
    samples: Vec<(String, String)>,
}

/// Prometheus families, each printed once with all its samples together.
#[derive(Default)]
struct Exposition {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

impl Exposition {
    fn add(&mut self, name: &str, kind: Kind, help: &str, label: &[(&str, &str)], value: String) {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    kind,
                    help: help.to_string(),
                    samples: Vec::new(),
                });
                self.index.insert(name.to_string(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        if let Some(f) = self.families.get_mut(i) {
            f.samples.push((labels(label), value));
        }
    }

    fn counter(&mut self, name: &str, help: &str, label: &[(&str, &str)], value: u64) {
        self.add(name, Kind::Counter, help, label, value.to_string());
    }

    fn gauge(&mut self, name: &str, help: &str, label: &[(&str, &str)], value: f64) {
        self.add(name, Kind::Gauge, help, label, number(value));
    }

    fn render(&self, out: &mut String) {
        for f in &self.families {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {kind}", f.name);
            for (l, v) in &f.samples {
                let _ = writeln!(out, "{}{l} {v}", f.name);
            }
        }
    }
}

/// Name, help and labels of a stage counter.
fn counter_name(
    stage: &'static str,
    field: &'static str,
) -> (String, String, Vec<(&'static str, &'static str)>) {
    let fixed = |name: &str, help: &str, l: Vec<(&'static str, &'static str)>| {
        (format!("veil_{name}"), help.to_string(), l)
    };
    if let Some(reason) = field.strip_prefix("drop_") {
        return fixed(
            "drops_total",
            "Packets or messages dropped, by stage and reason.",
            vec![("stage", stage), ("reason", reason)],
        );
    }
    match (stage, field) {
        ("rx", "udp_datagrams") => fixed(
            "packets_received_total",
            "UDP datagrams received from peers.",
            vec![],
        ),
        ("rx", "udp_bytes") => fixed(
            "bytes_received_total",
            "Bytes of UDP datagrams received from peers.",
            vec![],
        ),
        ("tx", "udp_datagrams") => {
            fixed("packets_sent_total", "UDP datagrams sent to peers.", vec![])
        }
        ("tx", "udp_bytes") => fixed(
            "bytes_sent_total",
            "Bytes of UDP datagrams sent to peers.",
            vec![],
        ),
        ("rx", "tun_packets") => fixed(
            "tun_packets_read_total",
            "IP packets read from the TUN device (to encrypt).",
            vec![],
        ),
        ("rx", "tun_bytes") => fixed(
            "tun_bytes_read_total",
            "Bytes read from the TUN device.",
            vec![],
        ),
        ("tx", "tun_packets") => fixed(
            "tun_packets_written_total",
            "IP packets written to the TUN device (decrypted).",
            vec![],
        ),
        ("tx", "tun_bytes") => fixed(
            "tun_bytes_written_total",
            "Bytes written to the TUN device.",
            vec![],
        ),
        ("rx", "io_errors") => fixed(
            "io_errors_total",
            "Failed I/O calls, by operation.",
            vec![("op", "receive")],
        ),
        ("tx", "udp_errors") => fixed(
            "io_errors_total",
            "Failed I/O calls, by operation.",
            vec![("op", "udp_send")],
        ),
        ("tx", "tun_errors") => fixed(
            "io_errors_total",
            "Failed I/O calls, by operation.",
            vec![("op", "tun_write")],
        ),
        ("crypto", "decrypted") => fixed(
            "transport_messages_total",
            "Transport messages opened or sealed.",
            vec![("op", "decrypted")],
        ),
        ("crypto", "encrypted") => fixed(
            "transport_messages_total",
            "Transport messages opened or sealed.",
            vec![("op", "encrypted")],
        ),
        ("crypto", "keepalives_received") => fixed(
            "keepalives_total",
            "Keepalives, by direction.",
            vec![("direction", "received")],
        ),
        ("crypto", "keepalives_sent") => fixed(
            "keepalives_total",
            "Keepalives, by direction.",
            vec![("direction", "sent")],
        ),
        ("control", "handshakes_completed_initiator") => fixed(
            "handshakes_total",
            "Handshakes, by our role and outcome.",
            vec![("role", "initiator"), ("outcome", "completed")],
        ),
        ("control", "handshakes_completed_responder") => fixed(
            "handshakes_total",
            "Handshakes, by our role and outcome.",
            vec![("role", "responder"), ("outcome", "completed")],
        ),
        ("control", "handshake_gave_up") => fixed(
            "handshakes_total",
            "Handshakes, by our role and outcome.",
            vec![("role", "initiator"), ("outcome", "gave_up")],
        ),
        ("control", "handshake_bad_mac") => fixed(
            "handshake_messages_rejected_total",
            "Handshake messages refused, by reason.",
            vec![("reason", "bad_mac")],
        ),
        ("control", "handshake_bad_crypto") => fixed(
            "handshake_messages_rejected_total",
            "Handshake messages refused, by reason.",
            vec![("reason", "bad_crypto")],
        ),
        ("control", "handshake_unknown_peer") => fixed(
            "handshake_messages_rejected_total",
            "Handshake messages refused, by reason.",
            vec![("reason", "unknown_peer")],
        ),
        ("control", "handshake_replayed") => fixed(
            "handshake_messages_rejected_total",
            "Handshake messages refused, by reason.",
            vec![("reason", "replayed")],
        ),
        ("control", "handshake_too_fast") => fixed(
            "handshake_messages_rejected_total",
            "Handshake messages refused, by reason.",
            vec![("reason", "too_fast")],
        ),
        ("control", "handshake_unexpected") => fixed(
            "handshake_messages_rejected_total",
            "Handshake messages refused, by reason.",
            vec![("reason", "unexpected")],
        ),
        ("control", "handshake_initiations_sent") => fixed(
            "handshake_messages_sent_total",
            "Handshake messages sent, by type.",
            vec![("type", "initiation")],
        ),
        ("control", "handshake_responses_sent") => fixed(
            "handshake_messages_sent_total",
            "Handshake messages sent, by type.",
            vec![("type", "response")],
        ),
        ("control", "cookie_replies_sent") => fixed(
            "handshake_messages_sent_total",
            "Handshake messages sent, by type.",
            vec![("type", "cookie_reply")],
        ),
        ("control", "migrations_accepted") => fixed(
            "migrations_total",
            "Session migrations (client address changes), by outcome.",
            vec![("outcome", "accepted")],
        ),
        ("control", "migrations_refused") => fixed(
            "migrations_total",
            "Session migrations (client address changes), by outcome.",
            vec![("outcome", "refused")],
        ),
        ("crypto", "rate_limit_violations") => fixed(
            "rate_limit_violations_total",
            "Data packets dropped for exceeding a client's rate limit.",
            vec![],
        ),
        ("control", "sessions_created") => fixed(
            "sessions_created_total",
            "Sessions (keypairs) created by completed handshakes.",
            vec![],
        ),
        ("control", "sessions_expired") => fixed(
            "sessions_expired_total",
            "Sessions ended by a timeout (idle, dead peer, absolute) or drained at shutdown.",
            vec![],
        ),
        _ => (
            format!("veil_{stage}_{field}_total"),
            format!("The {stage} stage's {field} counter."),
            vec![],
        ),
    }
}

/// The Prometheus text exposition (format 0.0.4) of `data`.
pub fn render_prometheus(data: &MetricsData) -> String {
    let mut e = Exposition::default();
    for (stage, set) in &data.counters {
        for (field, value) in set {
            // The control set carries one gauge among its counters.
            if (*stage, *field) == ("control", "degradation_level") {
                e.gauge(
                    "veil_degradation_level",
                    "Graceful-degradation level: 0 normal, 1 light, 2 moderate, 3 severe, 4 critical.",
                    &[],
                    *value as f64,
                );
                continue;
            }
            let (name, help, l) = counter_name(stage, field);
            e.counter(&name, &help, &l, *value);
        }
    }
    e.gauge(
        "veil_aead_backend_info",
        "The library sealing and opening transport data (always 1; the label names it).",
        &[("backend", data.aead)],
        1.0,
    );
    e.gauge(
        "veil_start_time_seconds",
        "When the process started, seconds since the Unix epoch.",
        &[],
        data.start_time,
    );
    if let Some(rss) = data.rss_bytes {
        e.gauge(
            "veil_memory_usage_bytes",
            "Resident memory of the process.",
            &[],
            rss as f64,
        );
    }
    for (thread, age) in &data.heartbeats {
        e.gauge(
            "veil_heartbeat_age_seconds",
            "Time since each thread's loop last ran (idle threads run at least every 0.5 s).",
            &[("thread", thread)],
            age.unwrap_or(f64::INFINITY),
        );
    }
    e.gauge(
        "veil_control_responsive",
        "1 if the control thread answered this scrape, 0 if it did not in time.",
        &[],
        if data.device.is_some() { 1.0 } else { 0.0 },
    );
    if let Some(d) = &data.device {
        e.gauge("veil_peers", "Configured peers.", &[], d.peers.len() as f64);
        e.gauge(
            "veil_active_sessions",
            "Peers with live session keys.",
            &[],
            d.active_sessions as f64,
        );
        e.gauge(
            "veil_handshake_backlog",
            "Handshake messages waiting for the control thread.",
            &[],
            d.handshake_backlog as f64,
        );
        let mut peers: Vec<_> = d.peers.iter().collect();
        peers.sort_by_key(|p| std::cmp::Reverse(p.rx_bytes.saturating_add(p.tx_bytes)));
        for p in peers.into_iter().take(data.peer_series) {
            let key = encode_key(&p.public_key);
            let l = [("peer", key.as_str())];
            e.counter(
                "veil_peer_received_bytes_total",
                "Transport bytes received from a peer (the top peers by traffic only).",
                &l,
                p.rx_bytes,
            );
            e.counter(
                "veil_peer_sent_bytes_total",
                "Transport bytes sent to a peer (the top peers by traffic only).",
                &l,
                p.tx_bytes,
            );
            e.gauge(
                "veil_peer_last_handshake_timestamp_seconds",
                "Last completed handshake with a peer, seconds since the Unix epoch (0: never).",
                &l,
                p.last_handshake.map_or(0.0, unix_seconds),
            );
        }
    }
    let mut out = String::with_capacity(8192);
    e.render(&mut out);
    for h in &data.histograms {
        let name = format!("veil_{}", h.name);
        let _ = writeln!(out, "# HELP {name} {}", h.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (b, c) in h.bounds.iter().zip(&h.cumulative) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {c}", number(*b));
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", number(h.sum));
        let _ = writeln!(out, "{name}_count {}", h.count);
    }
    out
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

fn json_opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "null".to_string(), f)
}

/// `veil show --json`: the same numbers as the metrics endpoint, and every peer.
pub fn render_json(data: &MetricsData, now: SystemTime) -> String {
    let mut o = String::with_capacity(4096);
    o.push('{');
    let _ = write!(o, "\"interface\":{},", json_str(&data.interface));
    let _ = write!(o, "\"listen_port\":{},", data.listen_port);
    let _ = write!(o, "\"aead\":{},", json_str(data.aead));
    let _ = write!(o, "\"control_responsive\":{},", data.device.is_some());
    if let Some(d) = &data.device {
        let _ = write!(
            o,
            "\"public_key\":{},",
            json_str(&encode_key(&d.public_key))
        );
        let _ = write!(o, "\"active_sessions\":{},", d.active_sessions);
        let _ = write!(o, "\"handshake_backlog\":{},", d.handshake_backlog);
        o.push_str("\"peers\":[");
        for (i, p) in d.peers.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let ips: Vec<String> = p
                .allowed_ips
                .iter()
                .map(|n| json_str(&n.to_string()))
                .collect();
            let _ = write!(
                o,
                "{{\"public_key\":{},\"endpoint\":{},\"allowed_ips\":[{}],\"latest_handshake\":{},\
                 \"latest_handshake_age_seconds\":{},\"rx_bytes\":{},\"tx_bytes\":{},\"rx_packets\":{},\
                 \"tx_packets\":{},\"persistent_keepalive\":{},\"has_preshared_key\":{},\"session_active\":{}}}",
                json_str(&encode_key(&p.public_key)),
                json_opt(p.endpoint, |e| json_str(&e.to_string())),
                ips.join(","),
                json_opt(p.last_handshake, |t| json_num(unix_seconds(t).floor())),
                json_opt(p.last_handshake, |t| json_num(
                    now.duration_since(t).map_or(0.0, |d| d.as_secs_f64())
                )),
                p.rx_bytes,
                p.tx_bytes,
                p.rx_packets,
                p.tx_packets,
                json_opt(p.persistent_keepalive, |k| k.to_string()),
                p.has_preshared_key,
                p.session_active,
            );
        }
        o.push_str("],");
    }
    o.push_str("\"counters\":{");
    for (i, (stage, set)) in data.counters.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let fields: Vec<String> = set
            .iter()
            .map(|(k, v)| format!("{}:{v}", json_str(k)))
            .collect();
        let _ = write!(o, "{}:{{{}}}", json_str(stage), fields.join(","));
    }
    o.push_str("},\"gauges\":{");
    let _ = write!(
        o,
        "\"memory_usage_bytes\":{},",
        json_opt(data.rss_bytes, |b| b.to_string())
    );
    let _ = write!(
        o,
        "\"start_time_seconds\":{},",
        json_num(data.start_time.floor())
    );
    let beats: Vec<String> = data
        .heartbeats
        .iter()
        .map(|(t, a)| format!("{}:{}", json_str(t), json_opt(*a, json_num)))
        .collect();
    let _ = write!(o, "\"heartbeat_age_seconds\":{{{}}}", beats.join(","));
    o.push_str("},\"histograms\":{");
    for (i, h) in data.histograms.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let [p50, p90, p99, max] = h.quantiles;
        let _ = write!(
            o,
            "{}:{{\"count\":{},\"sum\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"max\":{}}}",
            json_str(h.name),
            h.count,
            json_num(h.sum),
            json_num(p50),
            json_num(p90),
            json_num(p99),
            json_num(max)
        );
    }
    o.push_str("}}");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_control::device::PeerSnapshot;
    use veil_dataplane::counters::{CryptoCounters, RxCounters, TxCounters};
    use veil_dataplane::link::PeerId;

    fn data(peers: usize) -> MetricsData {
        let (hub, mut tx, _) = MetricsHub::new(2).unwrap();
        tx.latency_ns.record(30_000);
        tx.latency_ns.record(2_000_000);
        tx.batch_size.record(64);
        tx.latency_ns.flush_if_due(Instant::now());
        tx.batch_size.flush_if_due(Instant::now());
        let peers = (0..peers)
            .map(|i| PeerSnapshot {
                id: PeerId(i as u32),
                public_key: [i as u8; 32],
                has_preshared_key: false,
                preshared_key: None,
                endpoint: None,
                allowed_ips: vec![],
                last_handshake: None,
                rx_bytes: i as u64 * 100,
                tx_bytes: 1,
                rx_packets: 0,
                tx_packets: 0,
                persistent_keepalive: None,
                session_active: i == 0,
            })
            .collect();
        MetricsData {
            interface: "veil0".into(),
            listen_port: 51820,
            aead: "ring",
            counters: vec![
                ("rx", RxCounters::default().snapshot()),
                ("crypto", CryptoCounters::default().snapshot()),
                ("tx", TxCounters::default().snapshot()),
                (
                    "control",
                    vec![("sessions_created", 3), ("commands_dropped", 0)],
                ),
            ],
            device: Some(DeviceSnapshot {
                public_key: [9; 32],
                private_key: None,
                peers,
                active_sessions: 1,
                handshake_backlog: 0,
                counters: vec![],
            }),
            histograms: hub.histograms(),
            rss_bytes: rss_bytes(),
            heartbeats: vec![("veil-rx", Some(0.1)), ("veil-tx", None)],
            start_time: 1.7e9,
            peer_series: 2,
        }
    }

    #[test]
    fn exposition_is_well_formed() {
        let text = render_prometheus(&data(5));
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(
                    seen.insert(name.to_string()),
                    "family {name} declared twice"
                );
                let kind = rest.split(' ').nth(1).unwrap();
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                }
            } else if !line.starts_with('#') {
                let (series, value) = line.rsplit_once(' ').unwrap();
                assert!(series.starts_with("veil_"), "{line}");
                assert!(
                    value.parse::<f64>().is_ok() || value == "+Inf",
                    "bad value in {line}"
                );
            }
        }
        assert!(text.contains("veil_drops_total{stage=\"rx\",reason=\"malformed\"} 0"));
        assert!(text.contains("veil_sessions_created_total 3"));
        assert!(text.contains("veil_control_commands_dropped_total 0"));
        assert!(text.contains("veil_heartbeat_age_seconds{thread=\"veil-tx\"} +Inf"));
        // Only the top two peers by traffic get series.
        assert_eq!(text.matches("veil_peer_received_bytes_total{").count(), 2);
        assert!(text.contains(&encode_key(&[4; 32])));
        assert!(!text.contains(&encode_key(&[0; 32])));
        // Histogram buckets are cumulative and end with the count.
        assert!(text.contains("veil_rx_to_tx_latency_seconds_bucket{le=\"0.00005\"} 1"));
        assert!(text.contains("veil_rx_to_tx_latency_seconds_bucket{le=\"0.0025\"} 2"));
        assert!(text.contains("veil_rx_to_tx_latency_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("veil_rx_to_tx_latency_seconds_count 2"));
        assert!(text.contains("veil_batch_size_packets_bucket{le=\"64\"} 1"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(labels(&[("a", "x\"y\\z\n")]), "{a=\"x\\\"y\\\\z\\n\"}");
    }

    #[test]
    fn json_is_valid() {
        let text = render_json(&data(3), SystemTime::now());
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["interface"], "veil0");
        assert_eq!(v["peers"].as_array().unwrap().len(), 3);
        assert_eq!(v["counters"]["control"]["sessions_created"], 3);
        assert_eq!(v["histograms"]["rx_to_tx_latency_seconds"]["count"], 2);
        assert!(v["gauges"]["heartbeat_age_seconds"]["veil-tx"].is_null());
        assert_eq!(json_str("a\"\u{1}"), "\"a\\\"\\u0001\"");
    }
}
