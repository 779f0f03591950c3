//! Step 5: output, directly or through the bounded queue of the `veil-log` thread.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use log::Level;

use super::format::{format_line, Fields};
use super::limiter::SUMMARY_EVERY;
use super::tick;
use crate::config::LogFormat;

pub(super) enum Queued {
    Line(String),
    Flush(SyncSender<()>),
}

pub(super) enum Output {
    Direct(Mutex<Box<dyn Write + Send>>),
    Queue {
        tx: SyncSender<Queued>,
        dropped: Arc<AtomicU64>,
    },
}

/// The logger thread: write lines as they come; after a gap, say how many were dropped.
pub(super) fn write_queued(
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
