//! The Prometheus text exposition (format 0.0.4) of a [`MetricsData`].

use std::collections::HashMap;
use std::fmt::Write as _;

use super::{unix_seconds, MetricsData};
use crate::keys::encode_key;
use veil_control::device::PeerSnapshot;

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

/// The series `prometheus_wireguard_exporter` exports for a peer, with its default labels
/// (`interface`, `public_key`, `allowed_ips` joined by commas), so dashboards built on it
/// work unchanged.
fn exporter_series(e: &mut Exposition, interface: &str, key: &str, p: &PeerSnapshot) {
    let allowed: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
    let allowed = allowed.join(",");
    let l = [
        ("interface", interface),
        ("public_key", key),
        ("allowed_ips", allowed.as_str()),
    ];
    e.counter(
        "wireguard_sent_bytes_total",
        "Bytes sent to the peer",
        &l,
        p.tx_bytes,
    );
    e.counter(
        "wireguard_received_bytes_total",
        "Bytes received from the peer",
        &l,
        p.rx_bytes,
    );
    e.gauge(
        "wireguard_latest_handshake_seconds",
        "Seconds from the last handshake",
        &l,
        p.last_handshake.map_or(0.0, |t| unix_seconds(t).floor()),
    );
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
    // With several pipelines, each one's counters too (the families above are the totals).
    for (k, sets) in data.per_pipeline.iter().enumerate() {
        let k = k.to_string();
        for (stage, set) in sets {
            for (field, value) in set {
                e.counter(
                    "veil_pipeline_counter_total",
                    "Each pipeline's dataplane counters (the other families sum them).",
                    &[
                        ("pipeline", k.as_str()),
                        ("stage", stage),
                        ("counter", field),
                    ],
                    *value,
                );
            }
        }
    }
    e.gauge(
        "veil_aead_backend_info",
        "The library sealing and opening transport data (always 1; the label names it).",
        &[("backend", data.aead)],
        1.0,
    );
    let (completed, rolled_back, pause) = data.handoffs;
    for (result, n) in [("completed", completed), ("rolled_back", rolled_back)] {
        e.counter(
            "veil_handoffs_total",
            "Live hand-offs: completed into this process, or of this process and rolled back.",
            &[("result", result)],
            n,
        );
    }
    e.gauge(
        "veil_handoff_pause_seconds",
        "How long the last live hand-off kept traffic waiting (0: none yet).",
        &[],
        pause,
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
            &[("thread", thread.as_str())],
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
        e.gauge(
            "veil_peers_breaker_open",
            "Peers whose handshake circuit breaker is open or half-open (a handshake round gave up).",
            &[],
            d.peers
                .iter()
                .filter(|p| p.breaker != veil_control::breaker::BreakerState::Closed)
                .count() as f64,
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
            e.gauge(
                "veil_peer_breaker_state",
                "A peer's handshake circuit breaker: 0 closed, 1 half-open, 2 open (the top peers by traffic only).",
                &l,
                f64::from(p.breaker.as_gauge()),
            );
            exporter_series(&mut e, &data.interface, &key, p);
        }
    }
    let mut out = String::with_capacity(8192);
    e.render(&mut out);
    let mut previous = "";
    for h in &data.histograms {
        let name = format!("veil_{}", h.name);
        // A per-class histogram is one family: its HELP and TYPE once.
        if h.name != previous {
            let _ = writeln!(out, "# HELP {name} {}", h.help);
            let _ = writeln!(out, "# TYPE {name} histogram");
        }
        previous = h.name;
        let class = h
            .class
            .map(|c| format!("class=\"{}\"", escape_label(c)))
            .unwrap_or_default();
        let sep = if class.is_empty() { "" } else { "," };
        for (b, c) in h.bounds.iter().zip(&h.cumulative) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{class}{sep}le=\"{}\"}} {c}",
                number(*b)
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{class}{sep}le=\"+Inf\"}} {}", h.count);
        let labels = if class.is_empty() {
            String::new()
        } else {
            format!("{{{class}}}")
        };
        let _ = writeln!(out, "{name}_sum{labels} {}", number(h.sum));
        let _ = writeln!(out, "{name}_count{labels} {}", h.count);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testdata::data;
    use super::*;

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
                assert!(
                    series.starts_with("veil_") || series.starts_with("wireguard_"),
                    "{line}"
                );
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
        // Two pipelines' TX recorded a batch each (64 and 32 packets): one series, both in it.
        assert!(text.contains("veil_batch_size_packets_bucket{le=\"64\"} 2"));
        assert!(text.contains("veil_batch_size_packets_count 2"));
        // retransmit_count: one family, a series per peer class.
        let r = "veil_handshake_retransmit_count";
        assert!(text.contains(&format!("{r}_bucket{{class=\"standard\",le=\"2\"}} 0")));
        assert!(text.contains(&format!("{r}_bucket{{class=\"standard\",le=\"3\"}} 1")));
        assert!(text.contains(&format!("{r}_count{{class=\"standard\"}} 1")));
        assert!(text.contains(&format!("{r}_sum{{class=\"standard\"}} 3")));
        assert!(text.contains(&format!("{r}_count{{class=\"veil\"}} 0")));
        assert_eq!(text.matches(&format!("# HELP {r} ")).count(), 1);
    }

    #[test]
    fn prometheus_wireguard_exporter_series_for_the_top_peers() {
        let mut d = data(5);
        if let Some(dev) = d.device.as_mut() {
            if let Some(p) = dev.peers.get_mut(4) {
                p.allowed_ips = vec![
                    "10.70.0.2/32".parse().unwrap(),
                    "fd70::2/128".parse().unwrap(),
                ];
                p.last_handshake = Some(
                    std::time::SystemTime::UNIX_EPOCH
                        + std::time::Duration::from_millis(1_562_834_127_900),
                );
            }
        }
        let text = render_prometheus(&d);
        let key = encode_key(&[4; 32]);
        let l = format!(
            "{{interface=\"veil0\",public_key=\"{key}\",allowed_ips=\"10.70.0.2/32,fd70::2/128\"}}"
        );
        assert!(
            text.contains(&format!("wireguard_sent_bytes_total{l} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("wireguard_received_bytes_total{l} 400\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "wireguard_latest_handshake_seconds{l} 1562834127\n"
            )),
            "{text}"
        );
        assert!(text.contains("# TYPE wireguard_latest_handshake_seconds gauge"));
        // The same peers as veil's own per-peer series.
        assert_eq!(text.matches("wireguard_sent_bytes_total{").count(), 2);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(labels(&[("a", "x\"y\\z\n")]), "{a=\"x\\\"y\\\\z\\n\"}");
    }
}
