//! `veil show --json`: the metrics as one JSON object.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::{unix_seconds, MetricsData};
use crate::keys::encode_key;
use crate::text::push_json_string;

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_string(&mut out, s);
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
                 \"tx_packets\":{},\"persistent_keepalive\":{},\"has_preshared_key\":{},\"session_active\":{},\"migration_validated\":{},\"breaker\":{}}}",
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
                p.migration_validated,
                json_str(p.breaker.as_str()),
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
            json_str(
                &h.class
                    .map_or_else(|| h.name.to_string(), |c| format!("{}_{c}", h.name))
            ),
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
    use super::super::testdata::data;
    use super::*;

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
