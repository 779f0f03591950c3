//! The histogram hub: recorders on the TX and control threads hand their histograms over
//! once a second; the hub is their reading side for scrapes and `veil show`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use veil_dataplane::pipeline::TxSamples;
use veil_dataplane::sampler::{histogram_pair, BoundsError, Collector, Recorder};

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
/// Initiations per completed handshake: 1 is none lost; a round gives up after 90 s of 5 s
/// retries, some 18 initiations.
const RETRANSMIT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 18.0];
/// Largest initiation count recorded (more is clamped here).
const RETRANSMIT_HIGH: u64 = 1024;

/// One histogram ready to print.
#[derive(Debug, Clone)]
pub struct HistogramData {
    /// Metric name without the `veil_` prefix.
    pub name: &'static str,
    /// The peer class label (`standard` or `veil`) of a per-class histogram.
    pub class: Option<&'static str>,
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
            class: None,
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

/// One histogram recorded by every pipeline's TX: a collector each, read as their sum.
#[derive(Debug)]
struct PerPipeline {
    first: Collector,
    rest: Vec<Collector>,
}

impl PerPipeline {
    fn new(rest: Vec<Collector>, first: Collector) -> Self {
        Self { first, rest }
    }

    /// The sum of what every pipeline handed over so far.
    fn total(&mut self) -> hdrhistogram::Histogram<u64> {
        let mut total = self.first.collect().clone();
        for c in &mut self.rest {
            // Same bounds on every side, so adding cannot fail; a failure would only lose
            // samples.
            let _ = total.add(c.collect());
        }
        total
    }
}

/// The reading side of every histogram, shared by the metrics endpoint and `veil show`.
#[derive(Debug)]
pub struct MetricsHub {
    /// One collector per pipeline (each pipeline's TX records its own); read as their sum.
    rx_to_tx: Mutex<PerPipeline>,
    batch_size: Mutex<PerPipeline>,
    handshake_processing: Mutex<Collector>,
    handshake_queue: Mutex<Collector>,
    /// Initiations per completed handshake, standard peers and veil peers.
    retransmit_standard: Mutex<Collector>,
    retransmit_veil: Mutex<Collector>,
    /// How many peers get per-peer series.
    pub peer_series: usize,
    /// When the process started.
    pub started: SystemTime,
}

/// The control thread's recorders: how long it spent on a handshake message, and how long
/// the message waited for it.
#[derive(Debug)]
pub struct HandshakeRecorders {
    processing: Recorder,
    queue: Recorder,
    retransmit_standard: Recorder,
    retransmit_veil: Recorder,
}

impl HandshakeRecorders {
    /// One handshake message, handled from `start` to `end`, read by RX at `received`.
    pub fn record(&mut self, start: Instant, end: Instant, received: Option<Instant>) {
        self.processing
            .record(nanos(end.saturating_duration_since(start)));
        if let Some(r) = received {
            self.queue.record(nanos(start.saturating_duration_since(r)));
        }
    }

    /// A handshake that took `round.initiations` initiations of ours.
    pub fn record_round(&mut self, round: veil_control::device::HandshakeRound) {
        let n = u64::from(round.initiations).min(RETRANSMIT_HIGH);
        if round.veil_peer {
            self.retransmit_veil.record(n);
        } else {
            self.retransmit_standard.record(n);
        }
    }

    /// Hand the histograms over to the hub once a second.
    pub fn flush_if_due(&mut self, now: Instant) {
        self.processing.flush_if_due(now);
        self.queue.flush_if_due(now);
        self.retransmit_standard.flush_if_due(now);
        self.retransmit_veil.flush_if_due(now);
    }
}

impl MetricsHub {
    /// A hub, with the recorders for the TX thread and the control thread.
    pub fn new(
        peer_series: usize,
        pipelines: usize,
    ) -> Result<(Arc<Self>, Vec<TxSamples>, HandshakeRecorders), BoundsError> {
        let ns = || histogram_pair(1, NS_HIGH, HANDOVER);
        let batches = || histogram_pair(1, 1024, HANDOVER);
        let (lat_r, lat_first) = ns()?;
        let (bat_r, bat_first) = batches()?;
        let mut samples = vec![TxSamples {
            latency_ns: lat_r,
            batch_size: bat_r,
        }];
        let (mut lat_rest, mut bat_rest) = (Vec::new(), Vec::new());
        for _ in 1..pipelines {
            let (lat_r, lat) = ns()?;
            let (bat_r, bat) = batches()?;
            samples.push(TxSamples {
                latency_ns: lat_r,
                batch_size: bat_r,
            });
            lat_rest.push(lat);
            bat_rest.push(bat);
        }
        let (hp_r, hp_c) = ns()?;
        let (hq_r, hq_c) = ns()?;
        let count = || histogram_pair(1, RETRANSMIT_HIGH, HANDOVER);
        let (rs_r, rs_c) = count()?;
        let (rv_r, rv_c) = count()?;
        Ok((
            Arc::new(Self {
                rx_to_tx: Mutex::new(PerPipeline::new(lat_rest, lat_first)),
                batch_size: Mutex::new(PerPipeline::new(bat_rest, bat_first)),
                handshake_processing: Mutex::new(hp_c),
                handshake_queue: Mutex::new(hq_c),
                retransmit_standard: Mutex::new(rs_c),
                retransmit_veil: Mutex::new(rv_c),
                peer_series,
                started: SystemTime::now(),
            }),
            samples,
            HandshakeRecorders {
                processing: hp_r,
                queue: hq_r,
                retransmit_standard: rs_r,
                retransmit_veil: rv_r,
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
                &self.rx_to_tx.lock().total(),
            ),
            HistogramData::from_hdr(
                "batch_size_packets",
                "Packets per batch finished by TX.",
                BATCH_BUCKETS,
                1.0,
                &self.batch_size.lock().total(),
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
            self.retransmit("standard", &self.retransmit_standard),
            self.retransmit("veil", &self.retransmit_veil),
        ]
    }

    /// The reliability guide's `retransmit_count` for one peer class.
    fn retransmit(&self, class: &'static str, c: &Mutex<Collector>) -> HistogramData {
        HistogramData {
            class: Some(class),
            ..HistogramData::from_hdr(
                "handshake_retransmit_count",
                "Handshake initiations sent per completed handshake (1: none lost), by peer class.",
                RETRANSMIT_BUCKETS,
                1.0,
                c.lock().collect(),
            )
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
