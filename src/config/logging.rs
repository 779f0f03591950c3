//! `[logging]`, with the key names of the reliability guide. Every key is optional;
//! `examples/veil-server.conf` documents each with its default. `RUST_LOG`, when set,
//! overrides `level`.
//!
//! ```text
//! [logging]
//! level = info                    # error | warn | info | debug | trace | off
//! format = text                   # text | json (one object per line)
//! rate_limit_logs_per_sec = 100   # 0: no limit
//! sampling_rate = 1.0             # share of routine (debug/trace) events kept
//! async_logging = false           # write on a logger thread, never block
//! async_queue_size = 4096         # lines queued before dropping (async only)
//! ```

use log::LevelFilter;

use super::parser::{Parts, Sink};
use super::section::{only_draft, set, KeySpec, Section, SectionState};
use super::value::{parse_bool, parse_choice, parse_fraction, parse_number};

/// Default of `rate_limit_logs_per_sec`.
pub const DEFAULT_LOG_RATE: u32 = 100;
/// Largest `rate_limit_logs_per_sec`.
pub const MAX_LOG_RATE: u32 = 1_000_000;
/// Default of `async_queue_size`.
pub const DEFAULT_ASYNC_QUEUE: usize = 4096;
/// Bounds of `async_queue_size`.
pub const ASYNC_QUEUE_RANGE: (u32, u32) = (16, 1 << 20);
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

const FORMATS: &[(&str, LogFormat)] = &[("text", LogFormat::Text), ("json", LogFormat::Json)];

const LEVELS: &[(&str, LevelFilter)] = &[
    ("error", LevelFilter::Error),
    ("warn", LevelFilter::Warn),
    ("info", LevelFilter::Info),
    ("debug", LevelFilter::Debug),
    ("trace", LevelFilter::Trace),
    ("off", LevelFilter::Off),
];

#[derive(Default)]
pub(super) struct LoggingDraft(LoggingConfig);

impl Section for LoggingDraft {
    const NAME: &'static str = "logging";
    #[rustfmt::skip]
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::once("level", "log level", "error, warn, info, debug, trace or off; default info; RUST_LOG, when set, wins", |d, v, _| set(&mut d.0.level, parse_choice(v, LEVELS))),
        KeySpec::once("format", "log format", "text or json; default text", |d, v, _| set(&mut d.0.format, parse_choice(v, FORMATS))),
        KeySpec::once("rate_limit_logs_per_sec", "message rate", "messages per second 0..=1000000, 0 for no limit; default 100", |d, v, _| set(&mut d.0.rate_limit_logs_per_sec, parse_number(v, 0, MAX_LOG_RATE))),
        KeySpec::once("sampling_rate", "sampling rate", "a share of debug/trace messages to keep, 0.0..=1.0, e.g. 0.01; default 1.0", |d, v, _| set(&mut d.0.sampling_rate, parse_fraction(v))),
        KeySpec::once("async_logging", "switch", "true or false; default false", |d, v, _| set(&mut d.0.async_logging, parse_bool(v))),
        KeySpec::once("async_queue_size", "queue size", "lines 16..=1048576; default 4096", |d, v, _| set(&mut d.0.async_queue_size, parse_number(v, ASYNC_QUEUE_RANGE.0, ASYNC_QUEUE_RANGE.1).map(|n| n as usize))),
    ];

    fn finish(states: Vec<SectionState<Self>>, _: &mut Sink<'_>, out: &mut Parts) {
        out.logging = only_draft(states).0;
    }
}
