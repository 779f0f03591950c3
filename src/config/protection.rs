//! `[rate_limiting]`, `[degradation]` and `[priority]`: together, with the peers' own
//! limits, they make the control crate's `ProtectionConfig`.

use std::time::Duration;

use super::error::ValueProblem;
use super::output::Parts;
use super::section::Sink;
use super::section::{only_draft, set, KeySpec, Section, SectionState};
use super::value::{parse_bool, parse_factor, parse_number, parse_secs};
use veil_control::degradation::DegradationPolicy;
use veil_control::device::ProtectionConfig;
use veil_dataplane::priority::PriorityMap;
use veil_dataplane::ratelimit::RateLimit;

fn parse_dscp_list(text: &str) -> Result<u8, ValueProblem> {
    u8::try_from(parse_number(text, 0, 63)?)
        .map_err(|_| ValueProblem::OutOfRange { min: 0, max: 63 })
}

/// `[rate_limiting]` as written; a missing rate is unlimited (WireGuard's semantics), a
/// missing burst factor or penalty takes the reliability guide's value.
#[derive(Default)]
pub(super) struct RateLimitingDraft {
    bandwidth_mbps: Option<u32>,
    pps: Option<u32>,
    burst: Option<f64>,
    reconnect: Option<u32>,
    penalty_sec: Option<u32>,
}

impl Section for RateLimitingDraft {
    const NAME: &'static str = "rate_limiting";
    #[rustfmt::skip]
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::once("per_client_bandwidth_mbps", "bandwidth", "Mb/s per client and direction 0..=100000 (0: unlimited); default 0", |d, v, _| set(&mut d.bandwidth_mbps, parse_number(v, 0, 100_000).map(Some))),
        KeySpec::once("per_client_pps", "packet rate", "packets/s per client and direction 0..=100000000 (0: unlimited); default 0", |d, v, _| set(&mut d.pps, parse_number(v, 0, 100_000_000).map(Some))),
        KeySpec::once("burst_allowance_factor", "factor", "1..=100, e.g. 1.5 (burst capacity = rate x factor); default 1.5", |d, v, _| set(&mut d.burst, parse_factor(v, 1, 100).map(Some))),
        KeySpec::once("reconnect_limit_per_minute", "limit", "new sessions per minute per peer key 0..=100000 (0: unlimited); default 0", |d, v, _| set(&mut d.reconnect, parse_number(v, 0, 100_000).map(Some))),
        KeySpec::once("rate_limit_penalty_sec", "penalty", "seconds 0..=3600 without burst after a violation; default 5", |d, v, _| set(&mut d.penalty_sec, parse_number(v, 0, 3600).map(Some))),
    ];

    fn finish(states: Vec<SectionState<Self>>, _: &mut Sink<'_>, out: &mut Parts) {
        let rl = only_draft(states);
        let base = RateLimit::GUIDE;
        let limit = |mbps: Option<u32>, pps: Option<u32>| {
            let l = RateLimit {
                bytes_per_sec: mbps.map_or(0, |m| u64::from(m) * 125_000),
                packets_per_sec: pps.map_or(0, u64::from),
                burst_factor: rl.burst.unwrap_or(base.burst_factor),
                penalty: rl
                    .penalty_sec
                    .map_or(base.penalty, |s| Duration::from_secs(u64::from(s))),
            };
            if l.is_limited() {
                l
            } else {
                RateLimit::UNLIMITED
            }
        };
        // Peers are finished before this section (table order), so their overrides are known.
        let overrides = out
            .peers
            .iter()
            .filter(|p| p.bandwidth_mbps.is_some() || p.pps.is_some())
            .map(|p| {
                (
                    p.public_key,
                    limit(p.bandwidth_mbps.or(rl.bandwidth_mbps), p.pps.or(rl.pps)),
                )
            })
            .collect();
        let protection = &mut out.protection;
        protection.default_limit = limit(rl.bandwidth_mbps, rl.pps);
        protection.overrides = overrides;
        protection.reconnect_limit_per_minute = rl
            .reconnect
            .unwrap_or(ProtectionConfig::default().reconnect_limit_per_minute);
    }
}

impl Section for DegradationPolicy {
    const NAME: &'static str = "degradation";
    #[rustfmt::skip]
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::once("enable_graceful_degradation", "boolean", "true or false; default true", |d, v, _| set(&mut d.enabled, parse_bool(v))),
        KeySpec::once("cpu_threshold_percent", "threshold", "percent 1..=100; default 80", |d, v, _| set(&mut d.cpu_threshold_pct, parse_factor(v, 1, 100))),
        KeySpec::once("memory_threshold_percent", "threshold", "percent 1..=100; default 85", |d, v, _| set(&mut d.memory_threshold_pct, parse_factor(v, 1, 100))),
        KeySpec::once("escalation_delay_sec", "delay", "seconds 0..=3600; default 5", |d, v, _| set(&mut d.escalation_delay, parse_secs(v, 0, 3600))),
        KeySpec::once("recovery_delay_sec", "delay", "seconds 0..=3600; default 10", |d, v, _| set(&mut d.recovery_delay, parse_secs(v, 0, 3600))),
        KeySpec::once("hysteresis_percent", "margin", "percentage points 0..=50; default 5", |d, v, _| set(&mut d.hysteresis_pct, parse_factor(v, 0, 50))),
    ];

    fn finish(states: Vec<SectionState<Self>>, _: &mut Sink<'_>, out: &mut Parts) {
        out.protection.degradation = only_draft(states);
    }
}

/// `[priority]` as written.
#[derive(Default)]
pub(super) struct PriorityDraft {
    high: Option<Vec<u8>>,
    low: Option<Vec<u8>>,
    high_water: Option<u32>,
}

impl Section for PriorityDraft {
    const NAME: &'static str = "priority";
    #[rustfmt::skip]
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::<Self>::once("high_dscp", "DSCP", "code points 0..=63, comma-separated; default 46, 40, 48, 56 (EF, CS5-CS7)", |d, v, _| {
            d.high.get_or_insert_with(Vec::new).push(parse_dscp_list(v)?);
            Ok(())
        }).list(),
        KeySpec::<Self>::once("low_dscp", "DSCP", "code points 0..=63, comma-separated; default 8 (CS1)", |d, v, _| {
            d.low.get_or_insert_with(Vec::new).push(parse_dscp_list(v)?);
            Ok(())
        }).list(),
        KeySpec::once("ring_high_water_percent", "high-water mark", "percent 0..=100 of the RX ring; default 75", |d, v, _| set(&mut d.high_water, parse_number(v, 0, 100).map(Some))),
    ];

    fn finish(states: Vec<SectionState<Self>>, _: &mut Sink<'_>, out: &mut Parts) {
        let priority: PriorityDraft = only_draft(states);
        let defaults = ProtectionConfig::default();
        out.protection.priorities = match (&priority.high, &priority.low) {
            (None, None) => defaults.priorities,
            (high, low) => PriorityMap::new(
                high.as_deref().unwrap_or(&[46, 40, 48, 56]),
                low.as_deref().unwrap_or(&[8]),
            ),
        };
        out.protection.ring_high_water_pct =
            priority.high_water.unwrap_or(defaults.ring_high_water_pct);
    }
}
