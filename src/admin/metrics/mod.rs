//! Metrics: what the threads count, turned into Prometheus text exposition and JSON.
//!
//! Counters come straight from the per-stage counter sets (`Shared::{rx, crypto, tx}` and the
//! control thread's `ControlCounters`); per-peer numbers and active sessions from a snapshot the
//! control thread answers over the admin channel; histograms from [`Recorder`]s on the TX thread
//! (RX→TX latency, batch size) and around the control thread's handshake handling
//! ([`HandshakeRecorders`], in the control-thread shell), collected here. Nothing on the per-packet path locks or allocates.
//!
//! Every counter of every set is exported, so a counter added to a stage shows up without a
//! change here: the well-known ones under the names in docs/OPERATIONS.md, every `drop_*`
//! counter as `veil_drops_total{stage,reason}`, and any other as `veil_<stage>_<name>_total`.

mod hub;
mod json;
mod prometheus;

use std::time::{SystemTime, UNIX_EPOCH};

use veil_control::device::DeviceSnapshot;

pub use hub::{HandshakeRecorders, HistogramData, MetricsHub, DEFAULT_PEER_SERIES};
pub use json::{json_str, render_json};
pub use prometheus::render_prometheus;

/// Named counter sets: ("rx", [("udp_datagrams", 3), …]), ….
pub type CounterSets = Vec<(&'static str, Vec<(&'static str, u64)>)>;

/// Everything one scrape or `veil show` reports, gathered at one moment.
#[derive(Debug, Clone)]
pub struct MetricsData {
    /// Interface name.
    pub interface: String,
    /// UDP port in use.
    pub listen_port: u16,
    /// The transport AEAD backend sealing new sessions (`veil_dataplane::crypto::Backend`).
    pub aead: &'static str,
    /// Counter sets by stage: ("rx", …), ("crypto", …), ("tx", …) summed over every
    /// pipeline, ("control", …).
    pub counters: CounterSets,
    /// With several pipelines, each one's ("rx", …), ("crypto", …), ("tx", …); else empty.
    pub per_pipeline: Vec<CounterSets>,
    /// Each pipeline's CPUs, one line each.
    pub layout: Vec<String>,
    /// The control thread's snapshot; `None` if it did not answer.
    pub device: Option<DeviceSnapshot>,
    /// Histograms.
    pub histograms: Vec<HistogramData>,
    /// Resident memory of the process.
    pub rss_bytes: Option<u64>,
    /// Heartbeat age of each thread (`None`: never beat).
    pub heartbeats: Vec<(String, Option<f64>)>,
    /// Process start, seconds since the Unix epoch.
    pub start_time: f64,
    /// Per-peer series limit.
    pub peer_series: usize,
    /// Live hand-offs: (completed into this process, rolled back, last pause in seconds).
    pub handoffs: (u64, u64, f64),
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
pub(crate) mod testdata {
    //! A [`MetricsData`] for the renderers' tests.
    use std::time::Instant;

    use super::*;
    use veil_control::device::PeerSnapshot;
    use veil_dataplane::counters::{CryptoCounters, RxCounters, TxCounters};
    use veil_dataplane::link::PeerId;

    pub fn data(peers: usize) -> MetricsData {
        let (hub, mut txs, mut handshakes) = MetricsHub::new(2, 2).unwrap();
        let (mut tx, mut tx1) = (txs.remove(0), txs.remove(0));
        handshakes.record_round(veil_control::device::HandshakeRound {
            veil_peer: false,
            initiations: 3,
        });
        handshakes.flush_if_due(Instant::now());
        tx.latency_ns.record(30_000);
        tx.latency_ns.record(2_000_000);
        tx.batch_size.record(64);
        tx.latency_ns.flush_if_due(Instant::now());
        tx.batch_size.flush_if_due(Instant::now());
        // A second pipeline's TX: its samples are added to the same series.
        tx1.batch_size.record(32);
        tx1.batch_size.flush_if_due(Instant::now());
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
                migration_validated: false,
                breaker: veil_control::breaker::BreakerState::Closed,
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
            rss_bytes: crate::procfs::rss_bytes(),
            per_pipeline: vec![],
            layout: vec![],
            heartbeats: vec![("veil-rx".into(), Some(0.1)), ("veil-tx".into(), None)],
            start_time: 1.7e9,
            peer_series: 2,
            handoffs: (1, 0, 0.04),
        }
    }
}
