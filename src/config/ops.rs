//! The operational sections of the config file: `[logging]`, `[metrics]` and
//! `[threading]`, with the key names of the reliability guide. Every key is
//! optional; `examples/veil-server.conf` documents each with its default.
//!
//! ```text
//! [logging]
//! level = info                    # error | warn | info | debug | trace | off
//! format = text                   # text | json (one object per line)
//! rate_limit_logs_per_sec = 100   # 0: no limit
//! sampling_rate = 1.0             # share of routine (debug/trace) events kept
//! async_logging = false           # write on a logger thread, never block
//! async_queue_size = 4096         # lines queued before dropping (async only)
//!
//! [metrics]
//! enable = false
//! listen = 127.0.0.1:9586
//!
//! [threading]
//! mode = pipeline                 # pipeline | single
//! pin = true
//! rx_cpu = 0                      # crypto_cpu, tx_cpu, control_cpu alike
//! ```
//!
//! Each section may appear once. Command-line flags of `veil up` override
//! `[threading]` (see `runtime::prepare`); `RUST_LOG`, when set, overrides
//! `level`.

use std::net::SocketAddr;

use log::LevelFilter;

use super::{
    parse_number, ConfigErrorKind, KeySpec, Open, Section, SectionState, Sink, ValueProblem,
};
use crate::cli::Threading;

/// Default of `rate_limit_logs_per_sec`.
pub const DEFAULT_LOG_RATE: u32 = 100;
/// Largest `rate_limit_logs_per_sec`.
pub const MAX_LOG_RATE: u32 = 1_000_000;
/// Default of `async_queue_size`.
pub const DEFAULT_ASYNC_QUEUE: usize = 4096;
/// Bounds of `async_queue_size`.
pub const ASYNC_QUEUE_RANGE: (u32, u32) = (16, 1 << 20);
/// Largest CPU number accepted in the file (`CONFIG_NR_CPUS` maximum); whether it
/// exists on this machine is checked when veil starts.
pub const MAX_CPU: u32 = 8191;

// ---------------------------------------------------------------------------------------------
// Output types

/// `format` of `[logging]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per message.
    Text,
    /// One JSON object per line.
    Json,
}

/// The `[logging]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggingConfig {
    /// Most verbose level written (`RUST_LOG` overrides it).
    pub level: LevelFilter,
    /// Line format.
    pub format: LogFormat,
    /// Messages per second, burst of the same size; 0 means no limit.
    pub rate_limit_logs_per_sec: u32,
    /// Share of routine (debug and trace) messages kept, 0.0..=1.0.
    pub sampling_rate: f64,
    /// Write from a logger thread through a bounded queue.
    pub async_logging: bool,
    /// Capacity of that queue, in lines.
    pub async_queue_size: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: LevelFilter::Info,
            format: LogFormat::Text,
            rate_limit_logs_per_sec: DEFAULT_LOG_RATE,
            sampling_rate: 1.0,
            async_logging: false,
            async_queue_size: DEFAULT_ASYNC_QUEUE,
        }
    }
}

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

/// A CPU chosen in the file, with its line for messages at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSetting {
    /// CPU number.
    pub cpu: usize,
    /// Line of the key.
    pub line: usize,
}

/// The `[threading]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadingConfig {
    /// Pipeline (RX, crypto, TX threads) or single-threaded.
    pub mode: Threading,
    /// Pin threads to CPUs at all (`--no-pin` overrides).
    pub pin: bool,
    /// CPU of the RX thread (of the one thread in single mode).
    pub rx_cpu: Option<CpuSetting>,
    /// CPU of the crypto thread.
    pub crypto_cpu: Option<CpuSetting>,
    /// CPU of the TX thread.
    pub tx_cpu: Option<CpuSetting>,
    /// CPU of the control thread.
    pub control_cpu: Option<CpuSetting>,
    /// Use TUN segmentation offloads and UDP GSO/GRO where the kernel has them
    /// (`offload = auto`, the default); `off` (or `--no-offload`) never does.
    pub offload: bool,
}

impl Default for ThreadingConfig {
    fn default() -> Self {
        Self {
            mode: Threading::Pipeline,
            pin: true,
            rx_cpu: None,
            crypto_cpu: None,
            tx_cpu: None,
            control_cpu: None,
            offload: true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Value parsers

fn parse_bool(text: &str) -> Result<bool, ValueProblem> {
    const TRUE: [&str; 4] = ["true", "yes", "on", "1"];
    const FALSE: [&str; 4] = ["false", "no", "off", "0"];
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(text)) {
        Ok(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(text)) {
        Ok(false)
    } else {
        Err(ValueProblem::NotABool)
    }
}

fn parse_choice<T: Copy>(text: &str, choices: &[(&str, T)]) -> Result<T, ValueProblem> {
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|&(_, v)| v)
        .ok_or(ValueProblem::NotAChoice)
}

fn parse_fraction(text: &str) -> Result<f64, ValueProblem> {
    // Plain decimals only: "1e-2", "inf" and "NaN" parse as f64 but are no way to write a share.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(ValueProblem::NotAFraction);
    }
    let v: f64 = text.parse().map_err(|_| ValueProblem::NotAFraction)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(ValueProblem::FractionOutOfRange)
    }
}

fn parse_listen(text: &str) -> Result<SocketAddr, ValueProblem> {
    let addr: SocketAddr = text.parse().map_err(|_| ValueProblem::NotAListenAddress)?;
    if addr.port() == 0 {
        return Err(ValueProblem::OutOfRange {
            min: 1,
            max: u32::from(u16::MAX),
        });
    }
    Ok(addr)
}

fn parse_cpu(text: &str, line: usize) -> Result<Option<CpuSetting>, ValueProblem> {
    let cpu = parse_number(text, 0, MAX_CPU)?;
    Ok(Some(CpuSetting {
        cpu: cpu as usize,
        line,
    }))
}

const LEVELS: &[(&str, LevelFilter)] = &[
    ("error", LevelFilter::Error),
    ("warn", LevelFilter::Warn),
    ("info", LevelFilter::Info),
    ("debug", LevelFilter::Debug),
    ("trace", LevelFilter::Trace),
    ("off", LevelFilter::Off),
];

// ---------------------------------------------------------------------------------------------
// Sections

#[derive(Default)]
pub(super) struct LoggingDraft(LoggingConfig);

impl Section for LoggingDraft {
    const NAME: &'static str = "logging";
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::<Self>::once(
            "level",
            "log level",
            "error, warn, info, debug, trace or off; default info; RUST_LOG, when set, wins",
            |d, v, _| {
                d.0.level = parse_choice(v, LEVELS)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "format",
            "log format",
            "text or json; default text",
            |d, v, _| {
                d.0.format =
                    parse_choice(v, &[("text", LogFormat::Text), ("json", LogFormat::Json)])?;
                Ok(())
            },
        ),
        KeySpec::once(
            "rate_limit_logs_per_sec",
            "message rate",
            "messages per second 0..=1000000, 0 for no limit; default 100",
            |d, v, _| {
                d.0.rate_limit_logs_per_sec = parse_number(v, 0, MAX_LOG_RATE)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "sampling_rate",
            "sampling rate",
            "a share of debug/trace messages to keep, 0.0..=1.0, e.g. 0.01; default 1.0",
            |d, v, _| {
                d.0.sampling_rate = parse_fraction(v)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "async_logging",
            "switch",
            "true or false; default false",
            |d, v, _| {
                d.0.async_logging = parse_bool(v)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "async_queue_size",
            "queue size",
            "lines 16..=1048576; default 4096",
            |d, v, _| {
                d.0.async_queue_size =
                    parse_number(v, ASYNC_QUEUE_RANGE.0, ASYNC_QUEUE_RANGE.1)? as usize;
                Ok(())
            },
        ),
    ];
}

#[derive(Default)]
pub(super) struct MetricsDraft(MetricsConfig);

impl Section for MetricsDraft {
    const NAME: &'static str = "metrics";
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::<Self>::once(
            "enable",
            "switch",
            "true or false; default false",
            |d, v, _| {
                d.0.enable = parse_bool(v)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "listen",
            "listen address",
            "IP:PORT or [IPv6]:PORT, port 1..=65535; default 127.0.0.1:9586",
            |d, v, _| {
                d.0.listen = parse_listen(v)?;
                Ok(())
            },
        ),
    ];
}

#[derive(Default)]
pub(super) struct ThreadingDraft(ThreadingConfig);

const CPU_EXPECTED: &str = "a CPU number, e.g. 2 (see `nproc` and taskset -p $$)";

impl Section for ThreadingDraft {
    const NAME: &'static str = "threading";
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::<Self>::once(
            "mode",
            "threading mode",
            "pipeline or single; default pipeline",
            |d, v, _| {
                d.0.mode = parse_choice(
                    v,
                    &[
                        ("pipeline", Threading::Pipeline),
                        ("single", Threading::Single),
                    ],
                )?;
                Ok(())
            },
        ),
        KeySpec::once("pin", "switch", "true or false; default true", |d, v, _| {
            d.0.pin = parse_bool(v)?;
            Ok(())
        }),
        KeySpec::once(
            "offload",
            "offload setting",
            "auto or off; default auto",
            |d, v, _| {
                d.0.offload = parse_choice(v, &[("auto", true), ("off", false)])?;
                Ok(())
            },
        ),
        KeySpec::once("rx_cpu", "CPU", CPU_EXPECTED, |d, v, ctx| {
            d.0.rx_cpu = parse_cpu(v, ctx.line)?;
            Ok(())
        }),
        KeySpec::once("crypto_cpu", "CPU", CPU_EXPECTED, |d, v, ctx| {
            d.0.crypto_cpu = parse_cpu(v, ctx.line)?;
            Ok(())
        }),
        KeySpec::once("tx_cpu", "CPU", CPU_EXPECTED, |d, v, ctx| {
            d.0.tx_cpu = parse_cpu(v, ctx.line)?;
            Ok(())
        }),
        KeySpec::once("control_cpu", "CPU", CPU_EXPECTED, |d, v, ctx| {
            d.0.control_cpu = parse_cpu(v, ctx.line)?;
            Ok(())
        }),
    ];
}

// ---------------------------------------------------------------------------------------------
// Parser glue

/// Which operational section is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpsSection {
    Logging,
    Metrics,
    Threading,
}

/// Names of the operational sections, for messages.
pub(super) const NAMES: [&str; 3] = [LoggingDraft::NAME, MetricsDraft::NAME, ThreadingDraft::NAME];

/// The operational sections seen so far.
#[derive(Default)]
pub(super) struct OpsDrafts {
    logging: Option<SectionState<LoggingDraft>>,
    metrics: Option<SectionState<MetricsDraft>>,
    threading: Option<SectionState<ThreadingDraft>>,
}

/// The operational sections of a loaded file.
pub(super) struct OpsConfig {
    pub logging: LoggingConfig,
    pub metrics: MetricsConfig,
    pub threading: ThreadingConfig,
}

fn open_once<S: Section>(
    slot: &mut Option<SectionState<S>>,
    line: usize,
    sink: &mut Sink<'_>,
    which: OpsSection,
) -> Open {
    if let Some(first) = slot {
        sink.error(
            Some(line),
            ConfigErrorKind::DuplicateSection {
                section: S::NAME,
                first_line: first.header_line,
            },
        );
        Open::Skipped
    } else {
        *slot = Some(SectionState::new(line));
        Open::Ops(which)
    }
}

impl OpsDrafts {
    /// A `[name]` header: `None` if it is not an operational section.
    pub(super) fn header(&mut self, name: &str, line: usize, sink: &mut Sink<'_>) -> Option<Open> {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        Some(if is(LoggingDraft::NAME) {
            open_once(&mut self.logging, line, sink, OpsSection::Logging)
        } else if is(MetricsDraft::NAME) {
            open_once(&mut self.metrics, line, sink, OpsSection::Metrics)
        } else if is(ThreadingDraft::NAME) {
            open_once(&mut self.threading, line, sink, OpsSection::Threading)
        } else {
            return None;
        })
    }

    /// `key = value` inside an open operational section.
    pub(super) fn apply(
        &mut self,
        which: OpsSection,
        sink: &mut Sink<'_>,
        key: &str,
        value: &str,
        line: usize,
    ) {
        match which {
            OpsSection::Logging => {
                if let Some(s) = self.logging.as_mut() {
                    sink.apply(s, key, value, line);
                }
            }
            OpsSection::Metrics => {
                if let Some(s) = self.metrics.as_mut() {
                    sink.apply(s, key, value, line);
                }
            }
            OpsSection::Threading => {
                if let Some(s) = self.threading.as_mut() {
                    sink.apply(s, key, value, line);
                }
            }
        }
    }

    /// Defaults for absent sections; cross-key checks.
    pub(super) fn finish(self, sink: &mut Sink<'_>) -> OpsConfig {
        let threading = self
            .threading
            .map_or_else(ThreadingConfig::default, |state| {
                let t = state.draft.0.clone();
                if !t.pin {
                    let pin_line = state.line_of("pin").unwrap_or(state.header_line);
                    for (key, cpu) in [
                        ("rx_cpu", t.rx_cpu),
                        ("crypto_cpu", t.crypto_cpu),
                        ("tx_cpu", t.tx_cpu),
                        ("control_cpu", t.control_cpu),
                    ] {
                        if let Some(c) = cpu {
                            sink.error(
                                Some(c.line),
                                ConfigErrorKind::Contradiction {
                                    key,
                                    other: "pin = false",
                                    other_line: pin_line,
                                },
                            );
                        }
                    }
                }
                t
            });
        OpsConfig {
            logging: self.logging.map(|s| s.draft.0).unwrap_or_default(),
            metrics: self.metrics.map(|s| s.draft.0).unwrap_or_default(),
            threading,
        }
    }
}

/// The operational section that has `key`, for "it belongs in [...]" hints.
pub(super) fn section_with(key: &str) -> Option<&'static str> {
    fn has<S: Section>(key: &str) -> bool {
        S::KEYS.iter().any(|k| k.name.eq_ignore_ascii_case(key))
    }
    if has::<LoggingDraft>(key) {
        Some(LoggingDraft::NAME)
    } else if has::<MetricsDraft>(key) {
        Some(MetricsDraft::NAME)
    } else if has::<ThreadingDraft>(key) {
        Some(ThreadingDraft::NAME)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigErrors};
    use super::*;
    use proptest::strategy::Strategy;

    const KEY: &str = "eBiTrl6EfC2vnq98gbI9jxGR4xu+4tU4WO1bG/GKOlo=";
    const EXAMPLE: &str = include_str!("../../examples/veil-server.conf");

    fn with_interface(rest: &str) -> String {
        format!("[Interface]\nPrivateKey = {KEY}\n{rest}")
    }

    fn messages(text: &str) -> Vec<String> {
        match Config::parse(text, "veil0.conf") {
            Ok(c) => panic!("expected errors, parsed {c:?}"),
            Err(ConfigErrors(errors)) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_bool("Yes").ok(), Some(true));
        assert_eq!(parse_bool("off").ok(), Some(false));
        assert!(parse_bool("maybe").is_err());
        assert_eq!(parse_fraction("0.01").ok(), Some(0.01));
        assert_eq!(parse_fraction("1").ok(), Some(1.0));
        assert!(matches!(
            parse_fraction("1e-2"),
            Err(ValueProblem::NotAFraction)
        ));
        assert!(matches!(
            parse_fraction("NaN"),
            Err(ValueProblem::NotAFraction)
        ));
        assert!(matches!(
            parse_fraction("1.5"),
            Err(ValueProblem::FractionOutOfRange)
        ));
        assert!(matches!(
            parse_fraction("1..2"),
            Err(ValueProblem::NotAFraction)
        ));
        assert_eq!(
            parse_listen("[::1]:9100").ok(),
            Some("[::1]:9100".parse().expect("addr"))
        );
        assert!(parse_listen("localhost:9100").is_err());
    }

    #[test]
    fn absent_sections_give_the_defaults() {
        let c = Config::parse(&with_interface(""), "veil0.conf").expect("valid");
        assert_eq!(c.logging, LoggingConfig::default());
        assert_eq!(c.metrics, MetricsConfig::default());
        assert_eq!(c.threading, ThreadingConfig::default());
        assert_eq!(c.sessions, veil_control::session::SessionPolicy::default());
        assert_eq!(
            c.migration,
            veil_control::migration::MigrationPolicy::default()
        );
        let protection = veil_control::device::ProtectionConfig::default();
        assert_eq!(c.protection.default_limit, protection.default_limit);
        assert_eq!(
            c.protection.reconnect_limit_per_minute,
            protection.reconnect_limit_per_minute
        );
        assert_eq!(c.protection.degradation, protection.degradation);
        assert_eq!(c.protection.priorities, protection.priorities);
        assert_eq!(
            c.protection.ring_high_water_pct,
            protection.ring_high_water_pct
        );
    }

    #[test]
    fn every_key_parses() {
        let text = with_interface(
            "[LOGGING]\nLevel = debug\nformat = JSON\nrate_limit_logs_per_sec = 0\n\
             sampling_rate = 0.25\nasync_logging = yes\nasync_queue_size = 64\n\
             [metrics]\nenable = true\nlisten = [::1]:9100\n\
             [threading]\nmode = single\npin = true\nrx_cpu = 1\ncrypto_cpu = 0\ntx_cpu = 2\ncontrol_cpu = 3\n",
        );
        let c = Config::parse(&text, "veil0.conf").expect("valid");
        assert_eq!(
            c.logging,
            LoggingConfig {
                level: LevelFilter::Debug,
                format: LogFormat::Json,
                rate_limit_logs_per_sec: 0,
                sampling_rate: 0.25,
                async_logging: true,
                async_queue_size: 64,
            }
        );
        assert_eq!(
            c.metrics,
            MetricsConfig {
                enable: true,
                listen: "[::1]:9100".parse().expect("addr"),
            }
        );
        let cpu = |cpu, line| Some(CpuSetting { cpu, line });
        assert_eq!(
            c.threading,
            ThreadingConfig {
                mode: Threading::Single,
                pin: true,
                rx_cpu: cpu(1, 16),
                crypto_cpu: cpu(0, 17),
                tx_cpu: cpu(2, 18),
                control_cpu: cpu(3, 19),
                offload: true,
            }
        );
    }

    /// The example documents every key of every section, and its values are the defaults.
    #[test]
    fn example_file_parses_and_documents_every_key_with_its_default() {
        let c = Config::parse(EXAMPLE, "examples/veil-server.conf").expect("the example is valid");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.logging, LoggingConfig::default());
        assert_eq!(c.metrics, MetricsConfig::default());
        assert_eq!(c.threading, ThreadingConfig::default());
        assert_eq!(c.sessions, veil_control::session::SessionPolicy::default());
        assert_eq!(
            c.migration,
            veil_control::migration::MigrationPolicy::default()
        );
        let protection = veil_control::device::ProtectionConfig::default();
        assert_eq!(c.protection.default_limit, protection.default_limit);
        assert_eq!(
            c.protection.reconnect_limit_per_minute,
            protection.reconnect_limit_per_minute
        );
        assert_eq!(c.protection.degradation, protection.degradation);
        assert_eq!(c.protection.priorities, protection.priorities);
        assert_eq!(
            c.protection.ring_high_water_pct,
            protection.ring_high_water_pct
        );
        assert_eq!(c.interface.mtu, super::super::DEFAULT_MTU);
        assert_eq!(c.peers.len(), 1);
        fn names<S: Section>() -> Vec<&'static str> {
            S::KEYS.iter().map(|k| k.name).collect()
        }
        let all = [
            names::<super::super::InterfaceDraft>(),
            names::<super::super::PeerDraft>(),
            names::<LoggingDraft>(),
            names::<MetricsDraft>(),
            names::<ThreadingDraft>(),
            names::<veil_control::session::SessionPolicy>(),
            names::<veil_control::migration::MigrationPolicy>(),
            names::<super::super::RateLimitingDraft>(),
            names::<veil_control::degradation::DegradationPolicy>(),
            names::<super::super::PriorityDraft>(),
        ]
        .concat();
        for key in all {
            let documented = EXAMPLE.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
            assert!(
                documented,
                "examples/veil-server.conf does not show '{key} = ...'"
            );
        }
    }

    /// Each bad file, with its one precise message; `veil check` and `veil up`
    /// print exactly these and exit 2.
    #[test]
    fn bad_operational_settings_each_have_a_precise_message() {
        let cases: &[(&str, &str)] = &[
            (
                "[logging]\nlevel = verbose\n",
                "veil0.conf:4: level: 'verbose' is not a valid log level: not one of the allowed \
                 values (expected error, warn, info, debug, trace or off; default info; RUST_LOG, \
                 when set, wins)",
            ),
            (
                "[logging]\nformat = xml\n",
                "veil0.conf:4: format: 'xml' is not a valid log format: not one of the allowed \
                 values (expected text or json; default text)",
            ),
            (
                "[logging]\nformat =\n",
                "veil0.conf:4: format: '' is not a valid log format: it is empty \
                 (expected text or json; default text)",
            ),
            (
                "[logging]\nrate_limit_logs_per_sec = -5\n",
                "veil0.conf:4: rate_limit_logs_per_sec: '-5' is not a valid message rate: not a \
                 whole number (expected messages per second 0..=1000000, 0 for no limit; \
                 default 100)",
            ),
            (
                "[logging]\nrate_limit_logs_per_sec = 2000000\n",
                "veil0.conf:4: rate_limit_logs_per_sec: '2000000' is not a valid message rate: \
                 must be 0..=1000000 (expected messages per second 0..=1000000, 0 for no limit; \
                 default 100)",
            ),
            (
                "[logging]\nsampling_rate = 1.5\n",
                "veil0.conf:4: sampling_rate: '1.5' is not a valid sampling rate: must be \
                 0.0..=1.0 (expected a share of debug/trace messages to keep, 0.0..=1.0, e.g. \
                 0.01; default 1.0)",
            ),
            (
                "[logging]\nsampling_rate = 1%\n",
                "veil0.conf:4: sampling_rate: '1%' is not a valid sampling rate: not a decimal \
                 number (expected a share of debug/trace messages to keep, 0.0..=1.0, e.g. 0.01; \
                 default 1.0)",
            ),
            (
                "[logging]\nasync_logging = maybe\n",
                "veil0.conf:4: async_logging: 'maybe' is not a valid switch: not true or false \
                 (expected true or false; default false)",
            ),
            (
                "[logging]\nasync_queue_size = 8\n",
                "veil0.conf:4: async_queue_size: '8' is not a valid queue size: must be \
                 16..=1048576 (expected lines 16..=1048576; default 4096)",
            ),
            (
                "[logging]\nlevel = info\nlevel = debug\n",
                "veil0.conf:5: level: set again, first set on line 4; keep one of them",
            ),
            (
                "[logging]\n[logging]\n",
                "veil0.conf:4: second [logging] section, the first is on line 3; merge them \
                 (this one is skipped)",
            ),
            (
                "[logging]\nlevle = info\n",
                "veil0.conf:4: levle: unknown key in [logging]; did you mean level?",
            ),
            (
                "[logging]\nmode = single\n",
                "veil0.conf:4: mode: unknown key in [logging]; it belongs in a [threading] section",
            ),
            (
                "[logging]\ncolour = blue\n",
                "veil0.conf:4: colour: unknown key in [logging] (known keys: level, format, \
                 rate_limit_logs_per_sec, sampling_rate, async_logging, async_queue_size)",
            ),
            (
                "[metrics]\nenable = 2\n",
                "veil0.conf:4: enable: '2' is not a valid switch: not true or false \
                 (expected true or false; default false)",
            ),
            (
                "[metrics]\nlisten = localhost:9100\n",
                "veil0.conf:4: listen: 'localhost:9100' is not a valid listen address: not an IP \
                 address and port (host names are not accepted here) (expected IP:PORT or \
                 [IPv6]:PORT, port 1..=65535; default 127.0.0.1:9586)",
            ),
            (
                "[metrics]\nlisten = 127.0.0.1:0\n",
                "veil0.conf:4: listen: '127.0.0.1:0' is not a valid listen address: must be \
                 1..=65535 (expected IP:PORT or [IPv6]:PORT, port 1..=65535; default \
                 127.0.0.1:9586)",
            ),
            (
                "[metrics]\nListenPort = 9100\n",
                "veil0.conf:4: ListenPort: unknown key in [metrics]; it belongs in a [Interface] \
                 section",
            ),
            (
                "[threading]\nmode = multi\n",
                "veil0.conf:4: mode: 'multi' is not a valid threading mode: not one of the \
                 allowed values (expected pipeline or single; default pipeline)",
            ),
            (
                "[threading]\nrx_cpu = first\n",
                "veil0.conf:4: rx_cpu: 'first' is not a valid CPU: not a whole number \
                 (expected a CPU number, e.g. 2 (see `nproc` and taskset -p $$))",
            ),
            (
                "[threading]\ntx_cpu = 9000\n",
                "veil0.conf:4: tx_cpu: '9000' is not a valid CPU: must be 0..=8191 \
                 (expected a CPU number, e.g. 2 (see `nproc` and taskset -p $$))",
            ),
            (
                "[threading]\npin = false\ncrypto_cpu = 1\n",
                "veil0.conf:5: crypto_cpu: contradicts 'pin = false' on line 4; remove one of them",
            ),
            (
                "[threading]\ncontrol_cpu = 1\ncontrol_cpu = 2\n",
                "veil0.conf:5: control_cpu: set again, first set on line 4; keep one of them",
            ),
            (
                "[logs]\nlevel = info\n",
                "veil0.conf:3: unknown section [logs]; veil knows [Interface], [Peer], \
                 [sessions], [migration], [rate_limiting], [degradation], [priority], \
                 [logging], [metrics], [threading] (the keys below it are skipped)",
            ),
        ];
        assert!(cases.len() >= 20);
        for (rest, expected) in cases {
            let text = with_interface(rest);
            assert_eq!(messages(&text), vec![expected.to_string()], "for:\n{text}");
        }
        // Before any section: the message names the right one.
        assert_eq!(
            messages(&format!("level = debug\n{}", with_interface(""))),
            vec!["veil0.conf:1: level: key before any section; put it under [logging]"]
        );
    }

    proptest::proptest! {
        /// Any mix of operational sections, keys and values parses or fails cleanly.
        #[test]
        fn operational_sections_never_panic(lines in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(vec![
                    "[logging]", "[metrics]", "[threading]", "[Interface]", "[Peer]",
                ]).prop_map(String::from),
                (
                    proptest::sample::select(vec![
                        "level", "format", "rate_limit_logs_per_sec", "sampling_rate",
                        "async_logging", "async_queue_size", "enable", "listen", "mode",
                        "pin", "rx_cpu", "crypto_cpu", "tx_cpu", "control_cpu", "offload",
                    ]),
                    "[ -~]{0,12}",
                ).prop_map(|(k, v)| format!("{k} = {v}")),
            ],
            0..24,
        )) {
            let text = with_interface(&lines.join("\n"));
            let _ = Config::parse(&text, "veil0.conf");
        }
    }
}
