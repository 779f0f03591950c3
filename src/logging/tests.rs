use super::format::peer_from_message;
use super::*;
use std::time::UNIX_EPOCH;

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
