//! veil's logger: the `[logging]` section (and `RUST_LOG`) turned into a
//! [`log::Log`].
//!
//! One record goes through, in order:
//! 1. the level filter: `RUST_LOG` when it is set (env_logger's directive syntax,
//!    parsed by env_logger itself), otherwise `level`;
//! 2. sampling of routine events: debug and trace records are kept at
//!    `sampling_rate` (deterministically, one in 1/rate); info and above never are
//!    sampled;
//! 3. the rate limit: a token bucket of `rate_limit_logs_per_sec` per second with
//!    a burst of the same size; what it refuses is counted and a single
//!    "N log messages suppressed" line follows at most once per second (from the
//!    next record, from [`tick`], which the runtime calls every second, or at
//!    [`flush`]);
//! 4. formatting as text or as one JSON object per line (time in RFC 3339 UTC,
//!    level, component = the record's target, peer, class, message, and any
//!    other key-values);
//! 5. output to stderr: directly, or with `async_logging` through a bounded
//!    queue to the `veil-log` thread. A full queue drops the line and counts it
//!    (the caller never waits); the logger thread writes "N log messages
//!    dropped" when it catches up.
//!
//! Callers name the peer a message is about with the `peer` key-value
//! (`info!(peer = short_id; "...")`) or, as the control thread does, by
//! starting the message with `peer <short id>: `. An error class goes in the
//! `class` key-value (see [`veil_dataplane::error_class::ErrorClass`]).
//!
//! Why not env_logger's own logger: its format closure runs in the caller and
//! writes synchronously, and it has no place for a rate limit, sampling or a
//! queue that drops instead of blocking. Its filter is reused as is, so
//! `RUST_LOG` means what it always meant.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::{LogFormat, LoggingConfig};

mod format;
mod limiter;
mod sampler;
mod writer;

use format::{format_line, Fields};
use limiter::{RateLimiter, SUMMARY_EVERY};
use sampler::{is_routine, Sampler};
use writer::{write_queued, Output, Queued};

/// Why the logger could not be installed.
#[derive(Debug)]
pub enum LoggerError {
    /// Another logger is installed already.
    Install(log::SetLoggerError),
    /// The `veil-log` thread of `async_logging` did not start.
    Thread(io::Error),
}

impl fmt::Display for LoggerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Install(e) => write!(f, "cannot install the logger: {e}"),
            Self::Thread(e) => write!(f, "cannot start the logger thread: {e}"),
        }
    }
}

impl std::error::Error for LoggerError {}

/// How long [`flush`] waits for the logger thread.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// The installed logger, for [`flush`] and [`tick`].
static INSTALLED: OnceLock<&'static Logger> = OnceLock::new();

/// Install the logger for `cfg`; `RUST_LOG` (when set and not empty) replaces
/// `cfg.level`. Call once, before the threads start.
pub fn init(cfg: &LoggingConfig) -> Result<(), LoggerError> {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let logger: &'static Logger = Box::leak(Box::new(Logger::new(
        cfg,
        rust_log.as_deref(),
        Box::new(std::io::stderr()),
    )?));
    log::set_logger(logger).map_err(LoggerError::Install)?;
    log::set_max_level(logger.filter.filter());
    let _ = INSTALLED.set(logger);
    Ok(())
}

/// Write what is queued and any pending summary; waits up to 2 s for the
/// logger thread. Call before the process exits.
pub fn flush() {
    if let Some(l) = INSTALLED.get() {
        l.flush();
    }
}

/// Write a suppression summary if one is due. The runtime calls this about
/// once a second so a burst's summary does not wait for the next message.
pub fn tick() {
    if let Some(l) = INSTALLED.get() {
        l.summarize(Instant::now());
    }
}

/// veil's [`log::Log`].
pub struct Logger {
    filter: env_logger::Logger,
    format: LogFormat,
    sampler: Sampler,
    limiter: Mutex<RateLimiter>,
    output: Output,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("level", &self.filter.filter())
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

fn level_name(l: LevelFilter) -> &'static str {
    match l {
        LevelFilter::Off => "off",
        LevelFilter::Error => "error",
        LevelFilter::Warn => "warn",
        LevelFilter::Info => "info",
        LevelFilter::Debug => "debug",
        LevelFilter::Trace => "trace",
    }
}

impl Logger {
    /// A logger writing to `out` (through a `veil-log` thread with `async_logging`).
    fn new(
        cfg: &LoggingConfig,
        rust_log: Option<&str>,
        out: Box<dyn Write + Send>,
    ) -> Result<Self, LoggerError> {
        let filter = env_logger::Builder::new()
            .parse_filters(rust_log.unwrap_or(level_name(cfg.level)))
            .build();
        let output = if cfg.async_logging {
            let (tx, rx) = sync_channel(cfg.async_queue_size);
            let dropped = Arc::new(AtomicU64::new(0));
            let (counter, format) = (dropped.clone(), cfg.format);
            std::thread::Builder::new()
                .name("veil-log".into())
                .spawn(move || {
                    // Started before the runtime blocks SIGTERM and SIGINT: block
                    // them here too, or the kernel may deliver them to this thread
                    // and kill the process instead of the signalfd reading them.
                    let _ = veil_dataplane::sys::block_shutdown_signals();
                    write_queued(&rx, out, &counter, format);
                })
                .map_err(LoggerError::Thread)?;
            Output::Queue { tx, dropped }
        } else {
            Output::Direct(Mutex::new(out))
        };
        Ok(Self {
            filter,
            format: cfg.format,
            sampler: Sampler::new(cfg.sampling_rate),
            limiter: Mutex::new(RateLimiter::new(
                cfg.rate_limit_logs_per_sec,
                Instant::now(),
            )),
            output,
        })
    }

    fn emit(&self, line: String) {
        match &self.output {
            Output::Direct(out) => {
                let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                let mut buf = line.into_bytes();
                buf.push(b'\n');
                // One write per line, so lines of different threads never interleave.
                let _ = out.write_all(&buf);
            }
            Output::Queue { tx, dropped } => match tx.try_send(Queued::Line(line)) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }

    /// The rate limiter's summary, if due, as a log line of its own.
    fn summarize(&self, now: Instant) {
        let summary = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .summary(now);
        if let Some(text) = summary {
            self.emit(format_line(
                self.format,
                SystemTime::now(),
                Level::Warn,
                "veil::logging",
                &text,
                &Fields::default(),
            ));
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        if is_routine(record.level()) && !self.sampler.keep() {
            return;
        }
        let now = Instant::now();
        let admitted = {
            let mut limiter = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
            limiter.admit(record.level(), now)
        };
        self.summarize(now);
        if !admitted {
            return;
        }
        let mut fields = Fields::default();
        let _ = record.key_values().visit(&mut fields);
        let message = record.args().to_string();
        self.emit(format_line(
            self.format,
            SystemTime::now(),
            record.level(),
            record.target(),
            &message,
            &fields,
        ));
    }

    fn flush(&self) {
        // A second ahead: the last summary is written even if one just was.
        self.summarize(Instant::now() + SUMMARY_EVERY);
        match &self.output {
            Output::Direct(out) => {
                let _ = out.lock().unwrap_or_else(|e| e.into_inner()).flush();
            }
            Output::Queue { tx, .. } => {
                // Bounded like everything else here: a writer stuck for good (a
                // stderr nobody reads) must not turn an exit or a panic into a hang.
                let deadline = Instant::now() + FLUSH_WAIT;
                let (ack_tx, ack_rx) = sync_channel(1);
                let mut marker = Queued::Flush(ack_tx);
                loop {
                    match tx.try_send(marker) {
                        Ok(()) => {
                            let wait = deadline.saturating_duration_since(Instant::now());
                            let _ = ack_rx.recv_timeout(wait);
                            return;
                        }
                        Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                            marker = m;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => return,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
