//! `[metrics]`: the Prometheus endpoint. Every key is optional.
//!
//! ```text
//! [metrics]
//! enable = false
//! listen = 127.0.0.1:9586
//! ```

use std::net::SocketAddr;

use super::error::ValueProblem;
use super::parser::{Parts, Sink};
use super::section::{only_draft, set, KeySpec, Section, SectionState};
use super::value::parse_bool;

/// The `[metrics]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Serve the metrics endpoint.
    pub enable: bool,
    /// Where it listens.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enable: false,
            listen: default_metrics_listen(),
        }
    }
}

/// Loopback, at the port Prometheus' WireGuard exporter uses.
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9586))
}

pub(super) fn parse_listen(text: &str) -> Result<SocketAddr, ValueProblem> {
    let addr: SocketAddr = text.parse().map_err(|_| ValueProblem::NotAListenAddress)?;
    if addr.port() == 0 {
        return Err(ValueProblem::OutOfRange {
            min: 1,
            max: u32::from(u16::MAX),
        });
    }
    Ok(addr)
}

#[derive(Default)]
pub(super) struct MetricsDraft(MetricsConfig);

impl Section for MetricsDraft {
    const NAME: &'static str = "metrics";
    #[rustfmt::skip]
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::once("enable", "switch", "true or false; default false", |d, v, _| set(&mut d.0.enable, parse_bool(v))),
        KeySpec::once("listen", "listen address", "IP:PORT or [IPv6]:PORT, port 1..=65535; default 127.0.0.1:9586", |d, v, _| set(&mut d.0.listen, parse_listen(v))),
    ];

    fn finish(states: Vec<SectionState<Self>>, _: &mut Sink<'_>, out: &mut Parts) {
        out.metrics = only_draft(states).0;
    }
}
