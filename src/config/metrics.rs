//! `[metrics]`: the Prometheus endpoint. Every key is optional. A `listen` without `enable`
//! turns the endpoint on (a file that names an address wants it); `enable = false` keeps it
//! off whatever `listen` says.
//!
//! ```text
//! [metrics]
//! enable = false
//! listen = 127.0.0.1:9586
//! ```

use std::net::SocketAddr;

use super::error::ValueProblem;
use super::output::{MetricsConfig, Parts};
use super::section::Sink;
use super::section::{only_draft, set, KeySpec, Section, SectionState};
use super::value::parse_bool;

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

/// What the file said: `None` for a key it left out.
#[derive(Default)]
pub(super) struct MetricsDraft {
    enable: Option<bool>,
    listen: Option<SocketAddr>,
}

impl MetricsDraft {
    fn finish(self) -> MetricsConfig {
        let defaults = MetricsConfig::default();
        MetricsConfig {
            enable: self.enable.unwrap_or(self.listen.is_some()),
            listen: self.listen.unwrap_or(defaults.listen),
        }
    }
}

impl Section for MetricsDraft {
    const NAME: &'static str = "metrics";
    #[rustfmt::skip]
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::once("enable", "switch", "true or false; default false", |d, v, _| set(&mut d.enable, parse_bool(v).map(Some))),
        KeySpec::once("listen", "listen address", "IP:PORT or [IPv6]:PORT, port 1..=65535; default 127.0.0.1:9586", |d, v, _| set(&mut d.listen, parse_listen(v).map(Some))),
    ];

    fn finish(states: Vec<SectionState<Self>>, _: &mut Sink<'_>, out: &mut Parts) {
        out.metrics = only_draft(states).finish();
    }
}
