//! veil's own control socket, `/run/veil/IFACE/ctl.sock` (mode 0600), and the `veil show` and
//! `veil health` commands that talk to it.
//!
//! Protocol, version 1: the client sends one line, `show text`, `show json`, `health text` or
//! `health json`; the daemon answers `veil-ctl/1 exit=N` on the first line, then the body, and
//! closes. `N` is the exit status the command should end with (for `health`, 0 only when every
//! component is ok). The daemon renders the body, so the client needs no parser.
//!
//! Test hook (debug builds, see `crate::test_hooks`): when the daemon was started with
//! `VEIL_TEST_STALL_ON_REQUEST=NAME`, the line `test-stall` makes that thread stall (stop
//! beating and working) until shutdown, so tests can watch `veil health` notice. Without the
//! variable the line is refused.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use std::path::{Path, PathBuf};

use super::context::Context;
use super::ctl_request::{read_request, Request, UNKNOWN};
use super::health;
use super::metrics::{render_json, MetricsData};
use crate::keys::encode_key;

/// First word of every answer.
/// Directory of veil's own control sockets.
pub const CTL_DIR: &str = "/run/veil";

/// `/run/veil/IFACE/ctl.sock`: inside the interface's own directory, the one the systemd unit
/// makes writable (`RuntimeDirectory=veil/%i`; the rest of `/run` is read-only there).
pub fn ctl_socket(name: &str) -> PathBuf {
    Path::new(CTL_DIR).join(name).join("ctl.sock")
}

const VERSION: &str = "veil-ctl/1";
/// Exit status when the daemon cannot be reached or answers nonsense.
const EXIT_UNREACHABLE: u8 = 3;

fn answer(ctx: &Context, request: Request) -> (u8, String) {
    match request {
        Request::Show { json: false } => {
            (0, render_show_text(&ctx.metrics_data(), SystemTime::now()))
        }
        Request::Show { json: true } => (
            0,
            render_json(&ctx.metrics_data(), SystemTime::now()) + "\n",
        ),
        Request::Health { json } => {
            let report = health::check(ctx);
            let body = if json {
                report.to_json() + "\n"
            } else {
                report.to_text()
            };
            (report.status().exit_code(), body)
        }
        Request::Down => match veil_dataplane::sys::request_shutdown() {
            Ok(()) => {
                log::info!(
                    "{}: shutdown requested through the control socket",
                    ctx.name
                );
                (0, "stopping\n".into())
            }
            Err(e) => (1, format!("cannot signal the daemon: {e}\n")),
        },
        #[cfg(debug_assertions)]
        Request::TestStall => {
            if ctx.test_hooks.stall_on_request(&ctx.shared) {
                log::warn!("{}: test hook: stalling a dataplane thread", ctx.name);
                (0, "stalled\n".into())
            } else {
                (2, "test hooks are off\n".into())
            }
        }
    }
}

/// Serve one connection on the control socket.
pub fn serve_connection(ctx: &Context, stream: UnixStream) {
    let (code, body) = match read_request(&stream) {
        Ok(Some(request)) => answer(ctx, request),
        Ok(None) => (2, UNKNOWN.to_string()),
        Err(_) => return,
    };
    let mut w = &stream;
    let _ = write!(w, "{VERSION} exit={code}\n{body}");
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn millis(seconds: f64) -> String {
    format!("{:.3} ms", seconds * 1000.0)
}

/// `veil show IFACE`: the interface, a table of peers, non-zero counters and latencies.
pub fn render_show_text(data: &MetricsData, now: SystemTime) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "interface: {}", data.interface);
    let _ = writeln!(o, "  listening port: {}", data.listen_port);
    let _ = writeln!(o, "  aead: {}", data.aead);
    let (completed, rolled_back, pause) = data.handoffs;
    if completed + rolled_back > 0 {
        let _ = writeln!(
            o,
            "  hand-offs: {completed} completed, {rolled_back} rolled back, last pause {:.1} ms",
            pause * 1e3
        );
    }
    match &data.device {
        None => {
            let _ = writeln!(o, "  control thread: NOT ANSWERING (peers unknown)");
        }
        Some(d) => {
            let _ = writeln!(o, "  public key: {}", encode_key(&d.public_key));
            let _ = writeln!(
                o,
                "  peers: {} ({} with an active session)",
                d.peers.len(),
                d.active_sessions
            );
        }
    }
    if let Some(rss) = data.rss_bytes {
        let _ = writeln!(o, "  memory: {}", human_bytes(rss));
    }
    if !data.layout.is_empty() {
        let _ = writeln!(o, "  pipelines: {}", data.layout.len());
        for line in &data.layout {
            let _ = writeln!(o, "    {line}");
        }
    }
    if let Some(d) = &data.device {
        if !d.peers.is_empty() {
            let rows: Vec<[String; 8]> = d
                .peers
                .iter()
                .map(|p| {
                    let ips: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
                    [
                        encode_key(&p.public_key),
                        p.endpoint.map_or("(none)".into(), |e| e.to_string()),
                        if ips.is_empty() {
                            "(none)".into()
                        } else {
                            ips.join(", ")
                        },
                        p.last_handshake.map_or("never".into(), |t| {
                            human_age(now.duration_since(t).unwrap_or_default())
                        }),
                        human_bytes(p.rx_bytes),
                        human_bytes(p.tx_bytes),
                        if p.migration_validated {
                            "validated".into()
                        } else {
                            "at once".into()
                        },
                        p.breaker.as_str().into(),
                    ]
                })
                .collect();
            let head = [
                "PEER",
                "ENDPOINT",
                "ALLOWED IPS",
                "HANDSHAKE",
                "RECEIVED",
                "SENT",
                "ROAMING",
                "BREAKER",
            ];
            let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.chars().count());
                }
            }
            o.push('\n');
            let line = |cells: Vec<&str>| {
                let mut l = String::new();
                for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                    if i + 1 == cells.len() {
                        l.push_str(c);
                    } else {
                        let _ = write!(l, "{c:<w$}  ");
                    }
                }
                l.trim_end().to_string() + "\n"
            };
            o.push_str(&line(head.to_vec()));
            for r in &rows {
                o.push_str(&line(r.iter().map(String::as_str).collect()));
            }
        }
    }
    o.push_str("\ncounters (non-zero):\n");
    for (stage, set) in &data.counters {
        for (k, v) in set.iter().filter(|(_, v)| *v > 0) {
            let _ = writeln!(o, "  {stage}.{k} {v}");
        }
    }
    for (k, sets) in data.per_pipeline.iter().enumerate() {
        let _ = writeln!(o, "  pipeline {k}:");
        for (stage, set) in sets {
            for (c, v) in set.iter().filter(|(_, v)| *v > 0) {
                let _ = writeln!(o, "    {stage}.{c} {v}");
            }
        }
    }
    o.push_str("\nlatency:\n");
    for h in &data.histograms {
        let [p50, p90, p99, max] = h.quantiles;
        if h.name.ends_with("_seconds") {
            let _ = writeln!(
                o,
                "  {:<30} n={} p50={} p90={} p99={} max={}",
                h.name.trim_end_matches("_seconds"),
                h.count,
                millis(p50),
                millis(p90),
                millis(p99),
                millis(max)
            );
        } else {
            let name = h
                .class
                .map_or_else(|| h.name.to_string(), |c| format!("{} ({c})", h.name));
            let _ = writeln!(
                o,
                "  {name:<30} n={} p50={p50} p90={p90} p99={p99} max={max}",
                h.count
            );
        }
    }
    o
}

fn request(interface: &str, line: &str) -> io::Result<(u8, String)> {
    let path = ctl_socket(interface);
    let mut stream = UnixStream::connect(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    stream.take(64 << 20).read_to_string(&mut reply)?;
    let (first, body) = reply.split_once('\n').unwrap_or((reply.as_str(), ""));
    let code = first
        .strip_prefix(VERSION)
        .and_then(|r| r.trim().strip_prefix("exit="))
        .and_then(|c| c.parse::<u8>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a veil control socket"))?;
    Ok((code, body.to_string()))
}

fn run(command: &str, interface: &str, json: bool) -> ExitCode {
    if let Err(e) = crate::config::validate_interface_name(interface) {
        eprintln!("veil {command}: interface '{interface}': {e}");
        return ExitCode::from(2);
    }
    let format = if json { "json" } else { "text" };
    match request(interface, &format!("{command} {format}")) {
        Ok((code, body)) => {
            print!("{body}");
            if code != 0 && command == "health" {
                // Name what is wrong on stderr too, for scripts that only keep that.
                if let Some(first) = body.lines().next().filter(|_| !json) {
                    eprintln!("veil health: {first}");
                }
            }
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!(
                "veil {command}: cannot reach interface {interface}: {e} (is `veil up` running for it?)"
            );
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// `veil show IFACE [--json]`.
pub fn show(interface: &str, json: bool) -> ExitCode {
    run("show", interface, json)
}

/// `veil health IFACE [--json]`.
pub fn health(interface: &str, json: bool) -> ExitCode {
    run("health", interface, json)
}

/// Longest `veil down` waits for the daemon to finish (its drain included).
const DOWN_WAIT: Duration = Duration::from_secs(60);

/// `veil down IFACE`: asks the daemon to stop (the SIGTERM path: drain, hooks, interface
/// removed) and waits until its control socket is gone.
pub fn down(interface: &str) -> ExitCode {
    if let Err(e) = crate::config::validate_interface_name(interface) {
        eprintln!("veil down: interface '{interface}': {e}");
        return ExitCode::from(2);
    }
    match request(interface, "down") {
        Ok((0, _)) => {}
        Ok((code, body)) => {
            eprint!("veil down: {interface}: {body}");
            return ExitCode::from(code);
        }
        Err(e) => {
            eprintln!(
                "veil down: cannot reach interface {interface}: {e} (is `veil up` running for it?)"
            );
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    }
    let path = ctl_socket(interface);
    let deadline = std::time::Instant::now() + DOWN_WAIT;
    while UnixStream::connect(&path).is_ok() {
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "veil down: {interface} is still running after {}s",
                DOWN_WAIT.as_secs()
            );
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("{interface}: down");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_for_people() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_age(Duration::from_secs(5)), "5s ago");
        assert_eq!(human_age(Duration::from_secs(600)), "10m ago");
    }
}
