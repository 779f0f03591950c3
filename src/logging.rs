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
//! `class` key-value (see [`crate::failure::ErrorClass`]).
//!
//! Why not env_logger's own logger: its format closure runs in the caller and
//! writes synchronously, and it has no place for a rate limit, sampling or a
//! queue that drops instead of blocking. Its filter is reused as is, so
//! `RUST_LOG` means what it always meant.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::{LogFormat, LoggingConfig};

/// How often a suppression summary may be written.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);
/// How long [`flush`] waits for the logger thread.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// The installed logger, for [`flush`] and [`tick`].
static INSTALLED: OnceLock<&'static Logger> = OnceLock::new();

/// Install the logger for `cfg`; `RUST_LOG` (when set and not empty) replaces
/// `cfg.level`. Call once, before the threads start.
pub fn init(cfg: &LoggingConfig) -> Result<(), String> {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let logger: &'static Logger = Box::leak(Box::new(Logger::new(
        cfg,
        rust_log.as_deref(),
        Box::new(std::io::stderr()),
    )?));
    log::set_logger(logger).map_err(|e| format!("cannot install the logger: {e}"))?;
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

// ---------------------------------------------------------------------------------------------
// Rate limit and sampling

/// A token bucket over log lines, on an explicit clock.
#[derive(Debug)]
struct RateLimiter {
    /// Lines per second; 0: unlimited.
    rate: u32,
    tokens: f64,
    last: Instant,
    /// Refused since the last summary, by level (error, warn, info, debug, trace).
    suppressed: [u64; 5],
    /// When the lines not yet summarized began to be refused.
    since: Option<Instant>,
}

impl RateLimiter {
    fn new(rate: u32, now: Instant) -> Self {
        Self {
            rate,
            tokens: f64::from(rate),
            last: now,
            suppressed: [0; 5],
            since: None,
        }
    }

    fn admit(&mut self, level: Level, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let burst = f64::from(self.rate);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * burst).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        if let Some(n) = self.suppressed.get_mut(level as usize - 1) {
            *n += 1;
        }
        self.since.get_or_insert(now);
        false
    }

    /// The summary line, once lines were refused for a second (so one line
    /// covers a whole burst).
    fn summary(&mut self, now: Instant) -> Option<String> {
        let since = self.since?;
        if now.saturating_duration_since(since) < SUMMARY_EVERY {
            return None;
        }
        self.since = None;
        let total: u64 = self.suppressed.iter().sum();
        let by_level: Vec<String> = ["error", "warn", "info", "debug", "trace"]
            .iter()
            .zip(self.suppressed)
            .filter(|(_, n)| *n > 0)
            .map(|(l, n)| format!("{n} {l}"))
            .collect();
        self.suppressed = [0; 5];
        Some(format!(
            "{total} log messages suppressed in the last {:.1} s ({}; rate_limit_logs_per_sec = {})",
            now.saturating_duration_since(since).as_secs_f64(),
            by_level.join(", "),
            self.rate
        ))
    }
}

/// Keeps a fixed share of routine records, spread evenly (no randomness).
#[derive(Debug)]
struct Sampler {
    /// Parts per million kept.
    ppm: u64,
    seen: AtomicU64,
}

impl Sampler {
    fn new(rate: f64) -> Self {
        Self {
            ppm: (rate.clamp(0.0, 1.0) * 1e6).round() as u64,
            seen: AtomicU64::new(0),
        }
    }

    /// Keep the next routine record? True for `ppm` in every million, evenly.
    fn keep(&self) -> bool {
        if self.ppm >= 1_000_000 {
            return true;
        }
        let n = u128::from(self.seen.fetch_add(1, Ordering::Relaxed));
        let ppm = u128::from(self.ppm);
        (n + 1) * ppm / 1_000_000 > n * ppm / 1_000_000
    }
}

/// Debug and trace records are routine: per-handshake, per-retry, per-frame events.
fn is_routine(level: Level) -> bool {
    level >= Level::Debug
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// RFC 3339 in UTC with milliseconds, e.g. `2025-01-02T03:04:05.678Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Append `s` as a JSON string (with quotes).
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The peer named by the `peer <short id>: ` convention at the start of a message.
fn peer_from_message(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("peer ")?;
    let (id, _) = rest.split_once(':')?;
    let plausible = (1..=44).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    plausible.then_some(id)
}

/// A record's fields, ready to print.
#[derive(Debug, Default, PartialEq)]
struct Fields {
    peer: Option<String>,
    class: Option<String>,
    /// Other key-values, in order.
    extra: Vec<(String, String)>,
}

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let v = value.to_string();
        match key.as_str() {
            "peer" => self.peer = Some(v),
            "class" => self.class = Some(v),
            k => self.extra.push((k.to_string(), v)),
        }
        Ok(())
    }
}

/// One line, without the newline.
fn format_line(
    format: LogFormat,
    time: SystemTime,
    level: Level,
    component: &str,
    message: &str,
    fields: &Fields,
) -> String {
    let peer = fields
        .peer
        .as_deref()
        .or_else(|| peer_from_message(message));
    let mut out = String::with_capacity(96 + message.len());
    match format {
        LogFormat::Text => {
            let _ = write!(
                out,
                "{} {:<5} {component}: {message}",
                rfc3339(time),
                level.as_str()
            );
            // The convention already shows the peer in the message.
            if let Some(p) = fields.peer.as_deref() {
                let _ = write!(out, " peer={p}");
            }
            if let Some(c) = fields.class.as_deref() {
                let _ = write!(out, " class={c}");
            }
            for (k, v) in &fields.extra {
                let _ = write!(out, " {k}={v}");
            }
        }
        LogFormat::Json => {
            out.push_str("{\"time\":");
            json_string(&mut out, &rfc3339(time));
            out.push_str(",\"level\":");
            json_string(&mut out, level.as_str());
            out.push_str(",\"component\":");
            json_string(&mut out, component);
            if let Some(p) = peer {
                out.push_str(",\"peer\":");
                json_string(&mut out, p);
            }
            if let Some(c) = fields.class.as_deref() {
                out.push_str(",\"class\":");
                json_string(&mut out, c);
            }
            for (k, v) in &fields.extra {
                if matches!(k.as_str(), "time" | "level" | "component" | "message") {
                    continue;
                }
                out.push(',');
                json_string(&mut out, k);
                out.push(':');
                json_string(&mut out, v);
            }
            out.push_str(",\"message\":");
            json_string(&mut out, message);
            out.push('}');
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Output

enum Queued {
    Line(String),
    Flush(SyncSender<()>),
}

enum Output {
    Direct(Mutex<Box<dyn Write + Send>>),
    Queue {
        tx: SyncSender<Queued>,
        dropped: Arc<AtomicU64>,
    },
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
    ) -> Result<Self, String> {
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
                .map_err(|e| format!("cannot start the logger thread: {e}"))?;
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

/// The logger thread: write lines as they come; after a gap, say how many were dropped.
fn write_queued(
    rx: &Receiver<Queued>,
    mut out: Box<dyn Write + Send>,
    dropped: &AtomicU64,
    format: LogFormat,
) {
    let write = |out: &mut Box<dyn Write + Send>, line: String| {
        let mut buf = line.into_bytes();
        buf.push(b'\n');
        let _ = out.write_all(&buf);
    };
    loop {
        let msg = match rx.recv_timeout(SUMMARY_EVERY) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let text = format!(
                "{lost} log messages dropped: the async_logging queue was full (raise async_queue_size)"
            );
            let line = format_line(
                format,
                SystemTime::now(),
                Level::Warn,
                "veil::logging",
                &text,
                &Fields::default(),
            );
            write(&mut out, line);
        }
        match msg {
            Some(Queued::Line(line)) => write(&mut out, line),
            Some(Queued::Flush(ack)) => {
                let _ = out.flush();
                let _ = ack.send(());
            }
            None => tick(),
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
mod tests {
    use super::*;

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(String::from)
                .collect()
        }
    }

    fn cfg(f: impl FnOnce(&mut LoggingConfig)) -> LoggingConfig {
        let mut c = LoggingConfig::default();
        f(&mut c);
        c
    }

    fn log(l: &Logger, level: Level, target: &str, msg: &str) {
        l.log(
            &Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{msg}"))
                .build(),
        );
    }

    #[test]
    fn rfc3339_utc_with_millis() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(at(1_700_000_000, 999)), "2023-11-14T22:13:20.999Z");
        assert_eq!(rfc3339(at(4_107_542_399, 0)), "2100-02-28T23:59:59.000Z");
    }

    #[test]
    fn json_lines_have_every_field_and_escape_the_message() {
        let fields = Fields {
            peer: None,
            class: Some("fatal".into()),
            extra: vec![("errno".into(), "77".into()), ("time".into(), "x".into())],
        };
        let line = format_line(
            LogFormat::Json,
            UNIX_EPOCH,
            Level::Error,
            "veil::runtime",
            "peer AbCd+/12: said \"hi\"\n\tthen\u{1}left",
            &fields,
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["component"], "veil::runtime");
        assert_eq!(v["peer"], "AbCd+/12");
        assert_eq!(v["class"], "fatal");
        assert_eq!(v["errno"], "77");
        assert_eq!(v["message"], "peer AbCd+/12: said \"hi\"\n\tthen\u{1}left");
        assert_eq!(v.as_object().map(|o| o.len()), Some(7), "{line}");
    }

    #[test]
    fn peer_comes_from_the_key_value_or_the_message_convention() {
        assert_eq!(
            peer_from_message("peer xTIBA5rb: handshake"),
            Some("xTIBA5rb")
        );
        assert_eq!(peer_from_message("peer has no endpoint; x: y"), None);
        assert_eq!(peer_from_message("veil0: up"), None);
        let buf = Buf::default();
        let l = Logger::new(
            &cfg(|c| c.format = LogFormat::Json),
            None,
            Box::new(buf.clone()),
        )
        .unwrap();
        l.log(
            &Record::builder()
                .level(Level::Info)
                .target("veil_control::device")
                .args(format_args!("session installed"))
                .key_values(&[("peer", "Qz9EQLnn")])
                .build(),
        );
        log(
            &l,
            Level::Info,
            "veil_control::device",
            "peer 3N1uA/wM: roamed",
        );
        log(&l, Level::Info, "veil::runtime", "veil0: up");
        let peers: Vec<serde_json::Value> = buf
            .lines()
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["peer"].clone())
            .collect();
        assert_eq!(
            peers,
            vec![
                serde_json::json!("Qz9EQLnn"),
                serde_json::json!("3N1uA/wM"),
                serde_json::Value::Null
            ]
        );
    }

    #[test]
    fn text_lines() {
        let fields = Fields {
            peer: Some("Qz9EQLnn".into()),
            class: Some("transient".into()),
            extra: vec![],
        };
        assert_eq!(
            format_line(
                LogFormat::Text,
                UNIX_EPOCH,
                Level::Warn,
                "veil",
                "slow",
                &fields
            ),
            "1970-01-01T00:00:00.000Z WARN  veil: slow peer=Qz9EQLnn class=transient"
        );
    }

    #[test]
    fn rate_limiter_refuses_beyond_the_burst_and_refills() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, t0);
        let admitted = (0..15).filter(|_| r.admit(Level::Info, t0)).count();
        assert_eq!(admitted, 10);
        assert!(!r.admit(Level::Warn, t0));
        let later = t0 + Duration::from_millis(500);
        let admitted = (0..15).filter(|_| r.admit(Level::Info, later)).count();
        assert_eq!(admitted, 5, "half a second refills half the bucket");
        assert!(r.summary(later).is_none(), "a summary covers a second");
        let summary = r.summary(t0 + SUMMARY_EVERY).expect("a summary");
        assert_eq!(
            summary,
            "16 log messages suppressed in the last 1.0 s (1 warn, 15 info; \
             rate_limit_logs_per_sec = 10)"
        );
        assert!(
            r.summary(t0 + 2 * SUMMARY_EVERY).is_none(),
            "nothing new to report"
        );
        let t3 = t0 + 3 * SUMMARY_EVERY;
        while r.admit(Level::Info, t3) {}
        assert!(r.summary(t3).is_none());
        assert!(r.summary(t3 + SUMMARY_EVERY).is_some());
        let mut unlimited = RateLimiter::new(0, t0);
        assert!((0..100_000).all(|_| unlimited.admit(Level::Info, t0)));
    }

    #[test]
    fn sampler_keeps_the_configured_share_evenly() {
        let kept = |rate: f64, n: usize| {
            let s = Sampler::new(rate);
            (0..n).filter(|_| s.keep()).count()
        };
        assert_eq!(kept(1.0, 1000), 1000);
        assert_eq!(kept(0.0, 1000), 0);
        assert_eq!(kept(0.01, 1000), 10);
        assert_eq!(kept(0.25, 1000), 250);
        let s = Sampler::new(0.5);
        let pattern: Vec<bool> = (0..6).map(|_| s.keep()).collect();
        assert_eq!(pattern, [false, true, false, true, false, true]);
    }

    #[test]
    fn level_from_config_unless_rust_log_is_set() {
        let buf = Buf::default();
        let l = Logger::new(
            &cfg(|c| c.level = LevelFilter::Warn),
            None,
            Box::new(buf.clone()),
        )
        .unwrap();
        log(&l, Level::Info, "veil", "hidden");
        log(&l, Level::Warn, "veil", "shown");
        assert_eq!(buf.lines().len(), 1);
        let buf = Buf::default();
        let l = Logger::new(
            &cfg(|c| c.level = LevelFilter::Warn),
            Some("info,veil_control=debug"),
            Box::new(buf.clone()),
        )
        .unwrap();
        log(&l, Level::Info, "veil", "shown");
        log(&l, Level::Debug, "veil", "hidden");
        log(&l, Level::Debug, "veil_control::device", "shown");
        let lines = buf.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().all(|l| l.ends_with("shown")));
    }

    #[test]
    fn only_routine_records_are_sampled() {
        let buf = Buf::default();
        let c = cfg(|c| {
            c.level = LevelFilter::Trace;
            c.sampling_rate = 0.1;
        });
        let l = Logger::new(&c, None, Box::new(buf.clone())).unwrap();
        for _ in 0..50 {
            log(&l, Level::Debug, "veil", "routine");
            log(&l, Level::Warn, "veil", "important");
        }
        let lines = buf.lines();
        assert_eq!(
            lines.iter().filter(|l| l.ends_with("important")).count(),
            50
        );
        assert_eq!(lines.iter().filter(|l| l.ends_with("routine")).count(), 5);
    }

    #[test]
    fn a_flood_is_limited_and_summarized() {
        let buf = Buf::default();
        let l = Logger::new(
            &cfg(|c| c.rate_limit_logs_per_sec = 20),
            None,
            Box::new(buf.clone()),
        )
        .unwrap();
        for i in 0..1000 {
            log(&l, Level::Info, "veil", &format!("flood {i}"));
        }
        Log::flush(&l);
        let lines = buf.lines();
        let flood = lines.iter().filter(|l| l.contains("flood")).count();
        // 20 of burst, plus what refilled while the loop ran.
        assert!((20..=40).contains(&flood), "{flood} lines passed");
        let summary = lines.last().unwrap();
        assert!(
            summary.contains(&format!("{} log messages suppressed", 1000 - flood)),
            "{summary}"
        );
        assert!(summary.contains("WARN  veil::logging:"), "{summary}");
    }

    /// A writer that blocks until released, like a stalled journald.
    struct Stuck {
        release: Arc<(Mutex<bool>, std::sync::Condvar)>,
        inner: Buf,
    }

    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (m, cv) = &*self.release;
            let mut go = m.lock().unwrap();
            while !*go {
                go = cv.wait(go).unwrap();
            }
            self.inner.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn flush_gives_up_on_a_writer_stuck_for_good() {
        let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let out = Stuck {
            release: release.clone(),
            inner: Buf::default(),
        };
        let c = cfg(|c| {
            c.async_logging = true;
            c.async_queue_size = 16;
        });
        let l = Logger::new(&c, None, Box::new(out)).unwrap();
        for i in 0..100 {
            log(&l, Level::Info, "veil", &format!("line {i}"));
        }
        let start = Instant::now();
        Log::flush(&l);
        let took = start.elapsed();
        assert!(took >= FLUSH_WAIT && took < FLUSH_WAIT * 2, "{took:?}");
        let (m, cv) = &*release;
        *m.lock().unwrap() = true;
        cv.notify_all();
    }

    #[test]
    fn async_queue_drops_and_counts_instead_of_blocking() {
        let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let buf = Buf::default();
        let out = Stuck {
            release: release.clone(),
            inner: buf.clone(),
        };
        let c = cfg(|c| {
            c.async_logging = true;
            c.async_queue_size = 16;
            c.rate_limit_logs_per_sec = 0;
        });
        let l = Logger::new(&c, None, Box::new(out)).unwrap();
        let start = Instant::now();
        for i in 0..200 {
            log(&l, Level::Info, "veil", &format!("line {i}"));
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "logging blocked on a stuck writer"
        );
        {
            let (m, cv) = &*release;
            *m.lock().unwrap() = true;
            cv.notify_all();
        }
        // One more line after the jam, so the logger thread reports the gap first.
        std::thread::sleep(Duration::from_millis(50));
        log(&l, Level::Info, "veil", "after");
        Log::flush(&l);
        let lines = buf.lines();
        let written = lines.iter().filter(|l| l.contains(" line ")).count();
        let dropped: usize = lines
            .iter()
            .filter_map(|l| l.split("veil::logging: ").nth(1))
            .filter_map(|t| t.split(' ').next()?.parse::<usize>().ok())
            .sum();
        assert!((16..=18).contains(&written), "{written} written: {lines:?}");
        assert_eq!(written + dropped, 200, "{lines:?}");
        assert!(lines.last().unwrap().ends_with("after"), "{lines:?}");
    }
}
